//! Builder flags at the front of an instruction's arguments (`COPY --from=x --link …`).
//!
//! Each leading whitespace-separated word that starts with `--` is a flag; collection
//! stops at the first word that does not. A bare `--` ends the flags and is dropped.
//! Quotes inside a flag word are removed and the escape character escapes the next
//! character, as in BuildKit.

/// The flags found, each with the char index in the input where it starts, and the char
/// index where the remaining arguments start (`None`: nothing follows the flags).
pub(super) struct Extracted {
    pub flags: Vec<(String, usize)>,
    pub rest_start: Option<usize>,
}

pub(super) fn extract_flags(chars: &[char], escape: char) -> Extracted {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut cur = String::new();
    let mut start = 0;
    let mut blank_ok = false;
    let mut i = 0;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let c = chars.get(i).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if c != '-' || chars.get(i + 1) != Some(&'-') {
                return Extracted {
                    flags,
                    rest_start: Some(i),
                };
            }
            phase = Phase::Word;
            start = i;
        }
        if at_end {
            if cur != "--" && (blank_ok || !cur.is_empty()) {
                flags.push((std::mem::take(&mut cur), start));
            }
            break;
        }
        match phase {
            Phase::Word => {
                if c.is_whitespace() {
                    phase = Phase::Spaces;
                    if cur == "--" {
                        return Extracted {
                            flags,
                            rest_start: Some(i),
                        };
                    }
                    if blank_ok || !cur.is_empty() {
                        flags.push((std::mem::take(&mut cur), start));
                    }
                    cur.clear();
                    blank_ok = false;
                } else if c == '\'' || c == '"' {
                    phase = Phase::Quote(c);
                    blank_ok = true;
                } else if c == escape {
                    if i + 1 < chars.len() {
                        i += 1;
                        cur.push(chars[i]);
                    }
                } else {
                    cur.push(c);
                }
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                } else if c == escape {
                    if i + 1 == chars.len() {
                        phase = Phase::Word;
                    } else {
                        i += 1;
                        cur.push(chars[i]);
                    }
                } else {
                    cur.push(c);
                }
            }
            Phase::Spaces => {}
        }
        i += 1;
    }
    Extracted {
        flags,
        rest_start: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str) -> (Vec<String>, String) {
        let chars: Vec<char> = s.chars().collect();
        let e = extract_flags(&chars, '\\');
        let rest = e
            .rest_start
            .map(|i| chars[i..].iter().collect())
            .unwrap_or_default();
        (e.flags.into_iter().map(|(f, _)| f).collect(), rest)
    }

    #[test]
    fn flags_and_rest() {
        assert_eq!(
            run("--doit=true -- foo /tmp/"),
            (vec!["--doit=true".to_string()], " foo /tmp/".to_string())
        );
        assert_eq!(
            run("--a=\"b c\" x"),
            (vec!["--a=b c".to_string()], "x".to_string())
        );
        assert_eq!(
            run("--doit -- [ ]"),
            (vec!["--doit".to_string()], " [ ]".to_string())
        );
        assert_eq!(run("-x y"), (vec![], "-x y".to_string()));
        assert_eq!(run("--only"), (vec!["--only".to_string()], String::new()));
    }
}
