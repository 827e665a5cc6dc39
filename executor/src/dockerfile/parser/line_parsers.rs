//! How each instruction's text after the keyword and flags becomes argument words, as
//! BuildKit's line parsers do it:
//! - FROM, EXPOSE: split on runs of `[\t\v\f\r ]`;
//! - ADD, COPY, VOLUME: a JSON array of strings, else whitespace-split;
//! - RUN, CMD, ENTRYPOINT, SHELL: a JSON array of strings (exec form), else the whole text;
//! - HEALTHCHECK: the first word (`CMD`, `NONE`, …), then the RUN rule for the rest;
//! - ENV, LABEL: `key value` (legacy) or `k=v …` words, as `key, value, separator` triples;
//! - ARG: words, quotes kept;
//! - MAINTAINER, USER, WORKDIR, STOPSIGNAL: the whole text;
//! - anything else: one empty word (the instruction layer reports unknown keywords).
//!
//! A JSON array that holds anything but strings is an error, not shell form.

/// Argument words and whether they came from a JSON array.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Args {
    pub words: Vec<String>,
    pub json: bool,
}

use super::parse_error::ParseError;

/// The argument parser for `keyword` (lower case), `None` for ONBUILD (handled by the
/// caller, which parses the rest as a nested instruction).
pub(super) fn parse_args(keyword: &str, rest: &str, escape: char) -> Result<Args, ParseError> {
    match keyword {
        "add" | "copy" | "volume" => maybe_json_to_list(rest),
        "run" | "cmd" | "entrypoint" | "shell" => maybe_json(rest),
        "from" | "expose" => Ok(Args {
            words: whitespace_split(rest),
            json: false,
        }),
        "healthcheck" => health_config(rest),
        "env" => name_val(rest, "ENV", escape),
        "label" => name_val(rest, "LABEL", escape),
        "arg" => Ok(Args {
            words: parse_words(rest, escape),
            json: false,
        }),
        "maintainer" | "user" | "workdir" | "stopsignal" => Ok(Args {
            words: if rest.is_empty() {
                vec![]
            } else {
                vec![rest.to_string()]
            },
            json: false,
        }),
        _ => Ok(Args {
            words: vec![String::new()],
            json: false,
        }),
    }
}

fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]` (empty input gives no words).
pub(super) fn whitespace_split(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return vec![];
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_space = false;
    for c in rest.chars() {
        if is_split_space(c) {
            if !in_space {
                words.push(std::mem::take(&mut cur));
                in_space = true;
            }
        } else {
            in_space = false;
            cur.push(c);
        }
    }
    words.push(cur);
    words
}

/// Splits `rest` at its first run of split-spaces into two parts (like Go's
/// `regexp.Split(s, 2)`).
pub(super) fn split_once_space(rest: &str) -> (&str, Option<&str>) {
    match rest.char_indices().find(|&(_, c)| is_split_space(c)) {
        None => (rest, None),
        Some((i, _)) => {
            let tail = rest[i..].trim_start_matches(is_split_space);
            (&rest[..i], Some(tail))
        }
    }
}

enum Json {
    Strings(Vec<String>),
    NotJson,
}

fn parse_json(rest: &str) -> Result<Json, ParseError> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(Json::NotJson);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(Json::NotJson);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(ParseError::NotStringArray),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Strings)
}

fn maybe_json(rest: &str) -> Result<Args, ParseError> {
    if rest.is_empty() {
        return Ok(Args::default());
    }
    Ok(match parse_json(rest)? {
        Json::Strings(words) => Args { words, json: true },
        Json::NotJson => Args {
            words: vec![rest.to_string()],
            json: false,
        },
    })
}

fn maybe_json_to_list(rest: &str) -> Result<Args, ParseError> {
    Ok(match parse_json(rest)? {
        Json::Strings(words) => Args { words, json: true },
        Json::NotJson => Args {
            words: whitespace_split(rest),
            json: false,
        },
    })
}

fn health_config(rest: &str) -> Result<Args, ParseError> {
    let sep = rest
        .char_indices()
        .find(|&(_, c)| c.is_whitespace())
        .map_or(rest.len(), |(i, _)| i);
    if sep == 0 {
        return Ok(Args::default());
    }
    let kind = &rest[..sep];
    let cmd = maybe_json(rest[sep..].trim_start())?;
    let mut words = vec![kind.to_string()];
    words.extend(cmd.words);
    Ok(Args {
        words,
        json: cmd.json,
    })
}

fn name_val(rest: &str, key: &'static str, escape: char) -> Result<Args, ParseError> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Args::default());
    }
    if !words[0].contains('=') {
        let (k, v) = split_once_space(rest);
        let Some(v) = v else {
            return Err(ParseError::MissingValue(key));
        };
        return Ok(Args {
            words: vec![k.to_string(), v.to_string(), String::new()],
            json: false,
        });
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ParseError::MissingEquals(word));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(Args {
        words: out,
        json: false,
    })
}

/// Splits on whitespace outside quotes; quotes and escapes stay in the words (an escape at
/// the very end of the text is dropped).
pub(super) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut blank_ok = false;
    let mut cur = String::new();
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
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            break;
        }
        match phase {
            Phase::Word => {
                if c.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !cur.is_empty() {
                        words.push(std::mem::take(&mut cur));
                    }
                    cur.clear();
                    blank_ok = false;
                    i += 1;
                    continue;
                }
                if c == '\'' || c == '"' {
                    phase = Phase::Quote(c);
                    blank_ok = true;
                }
                if c == escape {
                    if i + 1 == chars.len() {
                        i += 1;
                        continue;
                    }
                    cur.push(c);
                    i += 1;
                    cur.push(chars[i]);
                    i += 1;
                    continue;
                }
                cur.push(c);
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                }
                if c == escape && q != '\'' {
                    if i + 1 == chars.len() {
                        phase = Phase::Word;
                        i += 1;
                        continue;
                    }
                    cur.push(c);
                    i += 1;
                    cur.push(chars[i]);
                    i += 1;
                    continue;
                }
                cur.push(c);
            }
            Phase::Spaces => {}
        }
        i += 1;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words("abc=\"123 456\" def 'x y'\\ z", '\\'),
            ["abc=\"123 456\"", "def", "'x y'\\ z"]
        );
        assert_eq!(parse_words("föo bàr \"âbc xÿz\"", '\\').len(), 3);
        assert_eq!(parse_words("a\\", '\\'), ["a"]);
        assert_eq!(parse_words("\"\"", '\\'), ["\"\""]);
    }

    #[test]
    fn env_forms() {
        let a = parse_args("env", "name value  more", '\\').unwrap();
        assert_eq!(a.words, ["name", "value  more", ""]);
        let a = parse_args("env", "a=1 b=\"2 3\"", '\\').unwrap();
        assert_eq!(a.words, ["a", "1", "=", "b", "\"2 3\"", "="]);
        assert_eq!(
            parse_args("env", "PATH", '\\').unwrap_err().to_string(),
            "ENV must have two arguments"
        );
        assert!(parse_args("label", "a=1 b", '\\').is_err());
    }

    #[test]
    fn json_forms() {
        let a = parse_args("cmd", "[\"a\", \"b\"]", '\\').unwrap();
        assert_eq!(
            (a.words, a.json),
            (vec!["a".to_string(), "b".to_string()], true)
        );
        let a = parse_args("cmd", "['a']", '\\').unwrap();
        assert_eq!((a.words, a.json), (vec!["['a']".to_string()], false));
        let a = parse_args("run", "[\"echo\",\"hello\"]this is invalid", '\\').unwrap();
        assert!(!a.json);
        assert_eq!(
            parse_args("cmd", "[ \"echo\", [ \"nested json\" ] ]", '\\').unwrap_err(),
            ParseError::NotStringArray
        );
        assert_eq!(
            parse_args("copy", "[1, \"a\"]", '\\').unwrap_err(),
            ParseError::NotStringArray
        );
        let a = parse_args("copy", "a  b\tc", '\\').unwrap();
        assert_eq!(a.words, ["a", "b", "c"]);
    }

    #[test]
    fn healthcheck_forms() {
        assert_eq!(
            parse_args("healthcheck", "CMD a b", '\\').unwrap().words,
            ["CMD", "a b"]
        );
        assert_eq!(
            parse_args("healthcheck", "NONE", '\\').unwrap().words,
            ["NONE"]
        );
        assert!(parse_args("healthcheck", "", '\\')
            .unwrap()
            .words
            .is_empty());
    }
}
