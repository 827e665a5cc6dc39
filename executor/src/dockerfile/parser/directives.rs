//! Parser directives (`# syntax=…`, `# escape=…`, `# check=…`) at the top of a file.
//!
//! Every line is offered to the [`DirectiveScanner`] until the first line that is not a
//! recognised directive: a blank line, an ordinary comment, an instruction or an unknown
//! key ends the directive block for good. Keys are case-insensitive; each may appear once.

use super::parse_error::ParseError;

/// What one line turned out to be.
pub(super) enum DirectiveLine {
    NotDirective,
    Directive { key: &'static str, value: String },
}

/// Recognises directives in the leading block of a file.
pub(super) struct DirectiveScanner {
    prefix: &'static str,
    done: bool,
    seen: Vec<&'static str>,
}

impl Default for DirectiveScanner {
    fn default() -> Self {
        DirectiveScanner {
            prefix: "#",
            done: false,
            seen: Vec::new(),
        }
    }
}

impl DirectiveScanner {
    /// Looks at one line (newline trimmed). An error is a repeated directive.
    pub(super) fn scan(&mut self, line: &str) -> Result<DirectiveLine, ParseError> {
        if self.done {
            return Ok(DirectiveLine::NotDirective);
        }
        let Some(rest) = line.strip_prefix(self.prefix) else {
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
            return Err(ParseError::RepeatedDirective(key));
        }
        self.seen.push(key);
        Ok(DirectiveLine::Directive {
            key,
            value: value.to_string(),
        })
    }
}

/// The `syntax` directive as a frontend chooser would find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxDirective {
    /// The image reference: the first word of the value.
    pub reference: String,
    /// The whole value (reference and options).
    pub value: String,
    /// The 1-based line it is on (0 for a JSON document).
    pub line: usize,
}

/// Finds the `syntax` directive as BuildKit's `DetectSyntax` does: a BOM and a leading
/// `#!` line are skipped, then `# syntax=…` in the leading directive block, else
/// `// syntax=…`, else a JSON document's `"syntax"` string.
pub fn detect_syntax(bytes: &[u8]) -> Option<SyntaxDirective> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = String::from_utf8_lossy(bytes);
    let (text, skipped) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => (rest.to_string(), 1),
        None if text.starts_with("#!") => (String::new(), 1),
        _ => (text.to_string(), 0),
    };
    for prefix in ["#", "//"] {
        let mut scanner = DirectiveScanner {
            prefix,
            ..DirectiveScanner::default()
        };
        for (i, line) in text.split('\n').enumerate() {
            if scanner.done {
                break;
            }
            if let Ok(DirectiveLine::Directive {
                key: "syntax",
                value,
            }) = scanner.scan(line)
            {
                let reference = value.split(' ').next().unwrap_or_default().to_string();
                return Some(SyntaxDirective {
                    reference,
                    value,
                    line: i + 1 + skipped,
                });
            }
        }
    }
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).ok()?;
    let value = json.get("syntax")?.as_str()?.to_string();
    Some(SyntaxDirective {
        reference: value.clone(),
        value,
        line: skipped,
    })
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

    fn scan_all(lines: &[&str]) -> Vec<Result<Option<(String, String)>, ParseError>> {
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
        assert_eq!(r[1], Err(ParseError::RepeatedDirective("escape")));
    }

    #[test]
    fn detects_syntax_in_every_format() {
        let d =
            detect_syntax(b"#!/usr/bin/env buildctl\n# syntax=docker/dockerfile:1 opt=x\nFROM a\n")
                .unwrap();
        assert_eq!(
            (d.reference.as_str(), d.value.as_str(), d.line),
            ("docker/dockerfile:1", "docker/dockerfile:1 opt=x", 2)
        );
        let d = detect_syntax(b"\xEF\xBB\xBF//syntax=foo/bar\n").unwrap();
        assert_eq!(d.reference, "foo/bar");
        let d = detect_syntax(br#"{"syntax": "json/frontend", "x": 1}"#).unwrap();
        assert_eq!(d.reference, "json/frontend");
        assert!(detect_syntax(b"FROM a\n# syntax=late\n").is_none());
        assert!(detect_syntax(b"# key = FOO bar\n# syntax=x\n").is_none());
    }

    #[test]
    fn not_directives() {
        assert!(split_directive("1abc=x").is_none());
        assert!(split_directive("abc =").is_none());
        assert!(split_directive("a b=c").is_none());
        assert_eq!(split_directive("a1=b c "), Some(("a1", "b c")));
    }
}
