//! Patterns of `${var#pat}`, `${var%pat}` and `${var/pat/repl}`: `*`, `?` and escapes,
//! matched with the priorities of the regular expressions BuildKit builds from them
//! (greedy `*` for `##`, `%%` and replacement, lazy for `#` and `%`; `*` and `?` never
//! match a newline).

/// A substitution pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PatternError {
    #[error("invalid escape '\\{0}'")]
    InvalidEscape(char),
    #[error("invalid escape '\\'")]
    TrailingEscape,
}

/// One element of a shell pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Literal(char),
    AnyChar,
    Star,
}

/// A compiled shell pattern (`*`, `?`, escapes) with greedy or lazy stars.
pub(super) struct Pattern {
    tokens: Vec<Token>,
    greedy: bool,
}

impl Pattern {
    pub(super) fn compile(text: &str, greedy: bool) -> Result<Pattern, PatternError> {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::AnyChar),
                '\\' => match chars.get(i) {
                    // `\}` and `\/` were escapes for the lexer: the backslash goes, the
                    // character is taken on the next round.
                    Some('}') | Some('/') => {}
                    Some(&n @ ('*' | '?' | '\\')) => {
                        tokens.push(Token::Literal(n));
                        i += 1;
                    }
                    Some(&n) => return Err(PatternError::InvalidEscape(n)),
                    None => return Err(PatternError::TrailingEscape),
                },
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Pattern { tokens, greedy })
    }

    /// The end of the preferred match of the pattern starting at `start` in `s`.
    fn match_at(&self, s: &[char], start: usize) -> Option<usize> {
        let mut failed = vec![false; (self.tokens.len() + 1) * (s.len() + 1)];
        self.match_from(s, 0, start, &mut failed)
    }

    fn match_from(&self, s: &[char], ti: usize, pos: usize, failed: &mut [bool]) -> Option<usize> {
        let key = ti * (s.len() + 1) + pos;
        if failed[key] {
            return None;
        }
        let r = match self.tokens.get(ti) {
            None => Some(pos),
            Some(Token::Literal(c)) => {
                if s.get(pos) == Some(c) {
                    self.match_from(s, ti + 1, pos + 1, failed)
                } else {
                    None
                }
            }
            Some(Token::AnyChar) => match s.get(pos) {
                Some(&c) if c != '\n' => self.match_from(s, ti + 1, pos + 1, failed),
                _ => None,
            },
            Some(Token::Star) => {
                let mut max = pos;
                while max < s.len() && s[max] != '\n' {
                    max += 1;
                }
                if self.greedy {
                    (pos..=max)
                        .rev()
                        .find_map(|end| self.match_from(s, ti + 1, end, failed))
                } else {
                    (pos..=max).find_map(|end| self.match_from(s, ti + 1, end, failed))
                }
            }
        };
        if r.is_none() {
            failed[key] = true;
        }
        r
    }

    /// The leftmost match at or after `from`: (start, end).
    fn find(&self, s: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=s.len()).find_map(|start| self.match_at(s, start).map(|end| (start, end)))
    }

    pub(super) fn trim_prefix(&self, value: &str) -> String {
        let s: Vec<char> = value.chars().collect();
        match self.match_at(&s, 0) {
            Some(end) => s[end..].iter().collect(),
            None => value.to_string(),
        }
    }

    pub(super) fn trim_suffix(&self, value: &str) -> String {
        let reversed = Pattern {
            tokens: self.tokens.iter().rev().copied().collect(),
            greedy: self.greedy,
        };
        let s: Vec<char> = value.chars().rev().collect();
        match reversed.match_at(&s, 0) {
            Some(end) => s[end..].iter().rev().collect(),
            None => value.to_string(),
        }
    }

    pub(super) fn replace(&self, value: &str, repl: &str, all: bool) -> String {
        let s: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut copied = 0;
        let mut pos = 0;
        let mut prev_end: Option<usize> = None;
        while pos <= s.len() {
            let Some((start, end)) = self.find(&s, pos) else {
                break;
            };
            let accept = !(start == end && prev_end == Some(start));
            if accept {
                out.extend(&s[copied..start]);
                if all {
                    // BuildKit replaces every match with Go's ReplaceAllString, which
                    // reads `$` in the replacement as a template.
                    let whole: String = s[start..end].iter().collect();
                    out.push_str(&go_template(repl, &whole));
                } else {
                    out.push_str(repl);
                }
                copied = end;
            }
            pos = if end == start { end + 1 } else { end };
            prev_end = Some(end);
            if !all {
                break;
            }
        }
        out.extend(&s[copied.min(s.len())..]);
        out
    }
}

/// Expands a Go regexp replacement template for a pattern without groups: `$$` is `$`,
/// `$0`/`${0}` the whole match, any other `$name`/`${name}` nothing; a `$` that starts no
/// name stays as it is.
fn go_template(repl: &str, whole: &str) -> String {
    let chars: Vec<char> = repl.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        let (name, next) = if chars.get(i + 1) == Some(&'{') {
            match chars[i + 2..].iter().position(|c| *c == '}') {
                Some(close) => (
                    chars[i + 2..i + 2 + close].iter().collect::<String>(),
                    i + 3 + close,
                ),
                None => (String::new(), i),
            }
        } else {
            let n = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .count();
            (chars[i + 1..i + 1 + n].iter().collect(), i + 1 + n)
        };
        if name.is_empty() {
            out.push('$');
            i += 1;
            continue;
        }
        if name == "0" {
            out.push_str(whole);
        }
        i = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_templates() {
        assert_eq!(go_template("<$0>", "ab"), "<ab>");
        assert_eq!(go_template("$$x${0}$1$", "m"), "$xm$");
    }
}
