//! Word expansion with the semantics of BuildKit's Dockerfile shell lexer.
//!
//! Dockerfile instructions such as ENV, COPY, WORKDIR or FROM expand `$VAR` references
//! themselves (RUN, CMD and ENTRYPOINT in shell form leave that to the shell). The rules
//! are a small subset of POSIX sh, exactly as BuildKit implements them:
//! - quoting: `'…'` is literal; `"…"` expands `$` and lets the escape character escape
//!   only `"`, `$` and itself; outside quotes the escape character makes the next
//!   character literal (an escape at the very end is dropped);
//! - `$name`, `${name}`, names of Unicode letters, digits and `_`; positional (`$1`) and
//!   special (`$@ $* $# $? $- $$ $! $0`) parameters are always unset; a `$` followed by no
//!   name is a literal `$`;
//! - modifiers `:-  -  :+  +  :?  ?` (default, alternative, required), `#  ##  %  %%`
//!   (prefix/suffix removal) and `/pat/repl  //pat/repl` (replacement), where patterns
//!   know `*`, `?` and escapes; the word after a modifier is expanded recursively;
//! - [`Lexer::process_words`] also splits into words: unquoted literal whitespace and
//!   whitespace that comes out of an unquoted expansion separate words.
//!
//! Patterns are matched by a small backtracking matcher that follows the priorities of
//! the regular expressions BuildKit builds from them (greedy `*` for `##`, `%%` and
//! replacement, lazy for `#` and `%`; `*` and `?` never match a newline).

mod pattern;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pattern::{Pattern, PatternError};

/// Looks variables up for expansion.
pub trait EnvGetter {
    /// The value of `key`, if it is set (possibly to the empty string).
    fn get(&self, key: &str) -> Option<String>;
    /// Every key that is set.
    fn keys(&self) -> Vec<String>;
}

impl EnvGetter for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
    fn keys(&self) -> Vec<String> {
        HashMap::keys(self).cloned().collect()
    }
}

impl EnvGetter for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned()
    }
    fn keys(&self) -> Vec<String> {
        BTreeMap::keys(self).cloned().collect()
    }
}

impl EnvGetter for [(String, String)] {
    fn get(&self, key: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    fn keys(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.iter()
            .filter(|(k, _)| seen.insert(k.as_str()))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl EnvGetter for Vec<(String, String)> {
    fn get(&self, key: &str) -> Option<String> {
        EnvGetter::get(self.as_slice(), key)
    }
    fn keys(&self) -> Vec<String> {
        EnvGetter::keys(self.as_slice())
    }
}

/// An expansion that failed: BuildKit's message, wrapped as `failed to process "WORD": …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {reason}", super::dump::go_quote(word))]
pub struct ShellError {
    /// The word that was being expanded.
    pub word: String,
    reason: ExpandError,
}

/// Why an expansion failed, before it is wrapped with the word it was expanding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ExpandError {
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: {source}")]
    InvalidPattern {
        pattern: String,
        source: PatternError,
    },
}

/// Which variables an expansion looked up and found, and which it did not find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

/// A configured expander. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with `escape` (`\` or `` ` ``) in the normal mode: quotes and escapes are
    /// processed and removed, unset variables expand to nothing.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Keep quote characters in the output.
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output.
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Treat quotes as ordinary characters (no quote processing at all).
    pub fn skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Leave references to unset variables as they are written.
    pub fn skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Expands `word` into one string (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn EnvGetter) -> Result<String, ShellError> {
        self.run(word, env).map(|(s, _, _)| s)
    }

    /// Expands `word` and splits the result into words (BuildKit's `ProcessWords`).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvGetter,
    ) -> Result<Vec<String>, ShellError> {
        self.run(word, env).map(|(_, w, _)| w)
    }

    /// Expands `word` and reports which variables were found and which were not.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn EnvGetter,
    ) -> Result<(String, Matches), ShellError> {
        self.run(word, env).map(|(s, _, m)| (s, m))
    }

    fn run(
        &self,
        word: &str,
        env: &dyn EnvGetter,
    ) -> Result<(String, Vec<String>, Matches), ShellError> {
        let mut sw = Expansion {
            lexer: self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            matches: Matches::default(),
        };
        let raw = self.raw_escapes;
        match sw.process_until(None, raw) {
            Ok((s, words)) => Ok((s, words, sw.matches)),
            Err(reason) => Err(ShellError {
                word: word.to_string(),
                reason,
            }),
        }
    }
}

/// Collects words while expanding.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

/// The state of one expansion.
struct Expansion<'a> {
    lexer: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn EnvGetter,
    raw_escapes: bool,
    matches: Matches,
}

impl Expansion<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Expands until `stop` (consumed) or the end of input.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_until_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn process_until_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let s = self.dollar()?;
                    result.push_str(&s);
                    words.add_string(&s);
                }
                '<' => {
                    let s = self.possible_heredoc();
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '\'' if quotes => {
                    let s = self.single_quoted()?;
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '"' if quotes => {
                    let s = self.double_quoted()?;
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                _ => {
                    self.pos += 1;
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        let Some(next) = self.next() else { break };
                        words.add_raw_char(next);
                        result.push(next);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(ExpandError::Unterminated(stop));
        }
        Ok((result, words.finish()))
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandError::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lexer.escape => {
                                self.pos += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(v) => {
                self.matches.matched.insert(name.to_string());
                Some(v)
            }
            None => {
                self.matches.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ExpandError::MissingBrace),
            Some('{') | Some('}') | Some(':') => return Err(ExpandError::BadSubstitution),
            _ => {}
        }
        let name = self.name();
        let first = self.next();
        let mut modifier: String = first.map(String::from).unwrap_or_else(|| "\u{fffd}".into());
        match first {
            Some('}') => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                let null_is_unset = c == ':';
                let op = if null_is_unset {
                    let n = self.next();
                    modifier.push(n.unwrap_or('\u{fffd}'));
                    n
                } else {
                    Some(c)
                };
                let pattern_like = matches!(op, Some('#') | Some('%'));
                if null_is_unset && pattern_like {
                    return Err(ExpandError::UnsupportedModifier(modifier));
                }
                let word = match self.process_until(Some('}'), pattern_like) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.lookup(&name);
                if self.lexer.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset_or_null = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    Some('-') => Ok(if unset_or_null {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if unset_or_null { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(ExpandError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => Err(ExpandError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be empty".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) => Ok(v),
                    },
                    Some(op @ ('#' | '%')) => {
                        let (greedy, pat) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let value = value.unwrap_or_default();
                        let pattern = Pattern::compile(&pat, greedy).map_err(|source| {
                            ExpandError::InvalidPattern {
                                pattern: pat.clone(),
                                source,
                            }
                        })?;
                        Ok(if op == '#' {
                            pattern.trim_prefix(&value)
                        } else {
                            pattern.trim_suffix(&value)
                        })
                    }
                    _ => Err(ExpandError::UnsupportedModifier(modifier)),
                }
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pat = match self.process_until(Some('/'), true) {
                    Ok((p, _)) => p,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::MissingSlash);
                        }
                        return Err(e);
                    }
                };
                let repl = match self.process_until(Some('}'), true) {
                    Ok((r, _)) => r,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.lookup(&name);
                let Some(value) = value.or_else(|| (!self.lexer.skip_unset_env).then(String::new))
                else {
                    return Ok(format!("${{{name}/{pat}/{repl}}}"));
                };
                let pattern =
                    Pattern::compile(&pat, true).map_err(|source| ExpandError::InvalidPattern {
                        pattern: pat.clone(),
                        source,
                    })?;
                Ok(pattern.replace(&value, &repl, all))
            }
            _ => Err(ExpandError::UnsupportedModifier(modifier)),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.pos += 1;
        let mut out = String::from("<<");
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            out.push(c);
            self.pos += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_all_reads_go_templates() {
        let env = vec![
            ("V".to_string(), "a.b.c".to_string()),
            ("D".to_string(), "$$".to_string()),
        ];
        let l = Lexer::new('\\');
        // The replacement's own expansion happens first, then Go's template rules.
        assert_eq!(l.process_word("${V//./$D}", &env).unwrap(), "a$b$c");
        assert_eq!(l.process_word("${V/./$D}", &env).unwrap(), "a$$b.c");
    }

    fn env() -> Vec<(String, String)> {
        vec![
            ("PWD".into(), "/home".into()),
            ("FOO".into(), "a/b/c.tar.gz".into()),
            ("EMPTY".into(), String::new()),
        ]
    }

    fn word(s: &str) -> Result<String, ShellError> {
        Lexer::new('\\').process_word(s, &env())
    }

    #[test]
    fn prefix_suffix_and_replacement() {
        assert_eq!(word("${FOO#*/}").unwrap(), "b/c.tar.gz");
        assert_eq!(word("${FOO##*/}").unwrap(), "c.tar.gz");
        assert_eq!(word("${FOO%.*}").unwrap(), "a/b/c.tar");
        assert_eq!(word("${FOO%%.*}").unwrap(), "a/b/c");
        assert_eq!(word("${FOO/\\//-}").unwrap(), "a-b/c.tar.gz");
        assert_eq!(word("${FOO//\\//-}").unwrap(), "a-b-c.tar.gz");
        assert_eq!(word("${FOO#*}").unwrap(), "a/b/c.tar.gz");
        assert_eq!(word("${FOO///}").unwrap(), "a/b/c.tar.gz");
        assert_eq!(word("${FOO//?/x}").unwrap(), "xxxxxxxxxxxx");
        assert!(word("${FOO=x}").is_err());
        assert!(word("${FOO//}").is_err());
    }

    #[test]
    fn required_messages_expand_and_name_the_variable() {
        let e = Lexer::new('\\')
            .process_word("${NOPE?msg $PWD}", &env())
            .unwrap_err();
        assert!(e.to_string().ends_with("NOPE: msg /home"), "{e}");
        let e = word("${EMPTY:?}").unwrap_err();
        assert!(e.to_string().ends_with("EMPTY: is not allowed to be empty"));
        let e = word("${NOPE:?}").unwrap_err();
        assert!(e.to_string().ends_with("NOPE: is not allowed to be unset"));
    }

    #[test]
    fn raw_modes_and_skip_unset() {
        let l = Lexer::new('\\').raw_quotes(true);
        assert_eq!(
            l.process_word("'a b' \"$PWD\"", &env()).unwrap(),
            "'a b' \"/home\""
        );
        let l = Lexer::new('\\').skip_unset_env(true);
        assert_eq!(
            l.process_word("$NOPE ${NOPE} ${NOPE:-x} $PWD", &env())
                .unwrap(),
            "$NOPE ${NOPE} ${NOPE:-x} /home"
        );
        let l = Lexer::new('\\').raw_escapes(true);
        assert_eq!(l.process_word("a\\ b", &env()).unwrap(), "a\\ b");
    }

    #[test]
    fn backtick_escape() {
        let l = Lexer::new('`');
        assert_eq!(l.process_word("a`$PWD\\x", &env()).unwrap(), "a$PWD\\x");
        assert_eq!(l.process_word("\"`\"\"", &env()).unwrap(), "\"");
    }

    #[test]
    fn matches_are_reported() {
        let (s, m) = Lexer::new('\\')
            .process_word_with_matches("$PWD ${NOPE:-$EMPTY}", &env())
            .unwrap();
        assert_eq!(s, "/home ");
        assert!(m.matched.contains("PWD") && m.matched.contains("EMPTY"));
        assert!(m.unmatched.contains("NOPE"));
    }

    #[test]
    fn words_split_unquoted_expansions_only() {
        let e = vec![("X".to_string(), " a  b ".to_string())];
        let l = Lexer::new('\\');
        assert_eq!(l.process_words("p${X}q", &e).unwrap(), ["p", "a", "b", "q"]);
        assert_eq!(l.process_words("p\"${X}\"q", &e).unwrap(), ["p a  b q"]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}", t in "[${}:#%/?*\\\\'\"a-z -]{0,40}") {
            crate::fuzz::timed("expansion", || {
                let l = Lexer::new('\\');
                let _ = l.process_word(&s, &env());
                let _ = l.process_words(&t, &env());
                let _ = Lexer::new('`').skip_unset_env(true).process_word(&t, &env());
            });
        }

        /// Nested `${…}` with every operator and patterns full of stars, on values
        /// long enough that a backtracking matcher would not finish.
        #[test]
        fn nested_expansions_and_patterns_end(
            w in "(\\$\\{(FOO|PWD|EMPTY|LONG|NOPE)(:?[-+?=]|##?|%%?|//?|:[0-9]?)|[*?a/.\\\\]{0,4}|\\}|\\$[A-Z]{0,4}|['\"]){0,24}"
        ) {
            let mut e = env();
            e.push(("LONG".into(), "a".repeat(300) + "b"));
            crate::fuzz::timed("expansion", || {
                for l in [Lexer::new('\\'), Lexer::new('`').raw_quotes(true).raw_escapes(true)] {
                    let _ = l.process_word(&w, &e);
                    let _ = l.process_words(&w, &e);
                    let _ = l.process_word_with_matches(&w, &e);
                }
            });
        }
    }
}
