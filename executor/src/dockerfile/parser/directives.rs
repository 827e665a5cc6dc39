//! Parser directives (`# syntax=…`, `# escape=…`, `# check=…`) at the top of a file.
//!
//! Every line is offered to the [`DirectiveScanner`] until the first line that is not a
//! recognised directive: a blank line, an ordinary comment, an instruction or an unknown
//! key ends the directive block for good. Keys are case-insensitive; each may appear once.

/// What one line turned out to be.
pub(super) enum DirectiveLine {
    NotDirective,
    Directive { key: &'static str, value: String },
}

/// Recognises directives in the leading block of a file.
#[derive(Default)]
pub(super) struct DirectiveScanner {
    done: bool,
    seen: Vec<&'static str>,
}

impl DirectiveScanner {
    /// Looks at one line (newline trimmed). An error is a repeated directive.
    pub(super) fn scan(&mut self, line: &str) -> Result<DirectiveLine, String> {
        if self.done {
            return Ok(DirectiveLine::NotDirective);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(DirectiveLine::NotDirective);
        };
        let Some((key, value)) = split_directive(rest.trim_start()) else {
            self.done = true;
            return Ok(DirectiveLine::NotDirective);
        };
        let key: &'static str = match key.to_ascii_lowercase().as_str() {
            "syntax" => "syntax",
            "escape" => "escape",
            "check" => "check",
            _ => {
                self.done = true;
                return Ok(DirectiveLine::NotDirective);
            }
        };
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key);
        Ok(DirectiveLine::Directive {
            key,
            value: value.to_string(),
        })
    }
}

/// `name = value`: a name of ASCII letters and digits starting with a letter, optional
/// whitespace around `=`, a non-empty value with trailing whitespace removed.
fn split_directive(s: &str) -> Option<(&str, &str)> {
    let name_len = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(s.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = s.split_at(name_len);
    let rest = rest.trim_start().strip_prefix('=')?;
    let value = rest.trim_start().trim_end();
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(lines: &[&str]) -> Vec<Result<Option<(String, String)>, String>> {
        let mut s = DirectiveScanner::default();
        lines
            .iter()
            .map(|l| {
                s.scan(l).map(|d| match d {
                    DirectiveLine::NotDirective => None,
                    DirectiveLine::Directive { key, value } => Some((key.to_string(), value)),
                })
            })
            .collect()
    }

    #[test]
    fn keys_are_case_insensitive_and_block_ends_at_first_other_line() {
        let r = scan_all(&[
            "# EScape = `  ",
            "#syntax=docker/dockerfile:1",
            "# key = FOO bar",
            "# check=skip=all",
        ]);
        assert_eq!(r[0], Ok(Some(("escape".into(), "`".into()))));
        assert_eq!(
            r[1],
            Ok(Some(("syntax".into(), "docker/dockerfile:1".into())))
        );
        assert_eq!(r[2], Ok(None));
        assert_eq!(r[3], Ok(None));
    }

    #[test]
    fn repeated_directive_is_an_error() {
        let r = scan_all(&["# escape=\\", "# ESCAPE=`"]);
        assert_eq!(
            r[1],
            Err("only one escape parser directive can be used".into())
        );
    }

    #[test]
    fn not_directives() {
        assert!(split_directive("1abc=x").is_none());
        assert!(split_directive("abc =").is_none());
        assert!(split_directive("a b=c").is_none());
        assert_eq!(split_directive("a1=b c "), Some(("a1", "b c")));
    }
}
