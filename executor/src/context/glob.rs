//! One glob engine for COPY/ADD sources and `.dockerignore`, in linear time.
//!
//! Patterns are Go's `filepath.Match` syntax: `*` (any run of non-`/` characters), `?`
//! (one non-`/` character), `[…]` classes with ranges, negated by a leading `^` (or `!`,
//! as kiln has always accepted), `\` escaping the next character, everything else
//! literal. A malformed pattern is [`PatternError::BadPattern`], Go's `ErrBadPattern`:
//! an unclosed or empty class, a range missing an end, a `\` at the very end.
//!
//! Two dialects share that syntax:
//! - [`Dialect::Component`]: one path component, as `filepath.Match` (a `**` is two
//!   stars); COPY sources match component by component, with a `**` *component*
//!   standing for any number of components ([`match_components`]);
//! - [`Dialect::Ignore`]: a whole `/`-separated path, as moby's `patternmatcher`
//!   compiles a `.dockerignore` line: `**` (and `**/`) matches any run of whole
//!   components, possibly none, and a trailing `**` matches everything.
//!
//! Matching simulates the pattern's automaton over the text, keeping the set of
//! pattern positions alive after each character: O(pattern × text) in the worst case,
//! whatever the pattern (no backtracking).

/// Go's `filepath.ErrBadPattern`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("syntax error in pattern")]
    BadPattern { pattern: String },
}

/// Which rules a pattern follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// One path component (`filepath.Match`).
    Component,
    /// A whole path, with `**` across components (`.dockerignore`).
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters but `/`.
    Star,
    /// `[…]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` (Ignore): nothing, or any text ending in `/`.
    Components,
    /// A trailing `**` (Ignore): everything that is left.
    Rest,
}

impl Token {
    fn accepts(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::One | Token::Star => c != '/',
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
            Token::Components | Token::Rest => true,
        }
    }
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern`; malformed patterns are refused as Go refuses them.
    pub fn new(pattern: &str, dialect: Dialect) -> Result<Glob, PatternError> {
        let bad = || PatternError::BadPattern {
            pattern: pattern.to_string(),
        };
        let p: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(p.len());
        let mut i = 0;
        while i < p.len() {
            let c = p[i];
            i += 1;
            match c {
                '*' if dialect == Dialect::Ignore && p.get(i) == Some(&'*') => {
                    i += 1;
                    if p.get(i) == Some(&'/') {
                        i += 1;
                    }
                    tokens.push(if i == p.len() {
                        Token::Rest
                    } else {
                        Token::Components
                    });
                }
                '*' => {
                    // Consecutive stars are one star.
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::One),
                '\\' => {
                    let &n = p.get(i).ok_or_else(bad)?;
                    i += 1;
                    tokens.push(Token::Literal(n));
                }
                '[' => {
                    let negated = matches!(p.get(i), Some('^') | Some('!'));
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        if p.get(i) == Some(&']') && !ranges.is_empty() {
                            i += 1;
                            break;
                        }
                        let lo = class_char(&p, &mut i).ok_or_else(bad)?;
                        let hi = if p.get(i) == Some(&'-') {
                            i += 1;
                            class_char(&p, &mut i).ok_or_else(bad)?
                        } else {
                            lo
                        };
                        ranges.push((lo, hi));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Glob { tokens })
    }

    /// Whether the pattern matches all of `text`.
    pub fn matches(&self, text: &str) -> bool {
        let n = self.tokens.len();
        // `at[i]`: the pattern has matched up to token i. `inside[i]`: a `**` at token i
        // has consumed some text that does not end in `/` yet.
        let mut at = vec![false; n + 1];
        let mut inside = vec![false; n + 1];
        let mut next_at = vec![false; n + 1];
        let mut next_inside = vec![false; n + 1];
        at[0] = true;
        self.close(&mut at);
        for c in text.chars() {
            next_at.iter_mut().for_each(|b| *b = false);
            next_inside.iter_mut().for_each(|b| *b = false);
            let mut alive = false;
            for i in 0..n {
                let (here, mid) = (at[i], inside[i]);
                if !here && !mid {
                    continue;
                }
                let t = &self.tokens[i];
                match t {
                    Token::Star | Token::Rest if here && t.accepts(c) => next_at[i] = true,
                    Token::Components => {
                        if c == '/' {
                            next_at[i + 1] = true;
                        }
                        next_inside[i] = true;
                    }
                    _ if here && t.accepts(c) => next_at[i + 1] = true,
                    _ => {}
                }
            }
            std::mem::swap(&mut at, &mut next_at);
            std::mem::swap(&mut inside, &mut next_inside);
            self.close(&mut at);
            for i in 0..=n {
                alive |= at[i] || inside[i];
            }
            if !alive {
                return false;
            }
        }
        at[n]
    }

    /// Follows the moves that consume nothing: a star, `**` or trailing `**` may match
    /// the empty text.
    fn close(&self, at: &mut [bool]) {
        for i in 0..self.tokens.len() {
            if at[i]
                && matches!(
                    self.tokens[i],
                    Token::Star | Token::Components | Token::Rest
                )
            {
                at[i + 1] = true;
            }
        }
    }
}

/// One class member (`\` escapes it); `None` where Go reports `ErrBadPattern`: at the
/// end, on an unescaped `-` or `]`, or when nothing follows (the class is unclosed).
fn class_char(p: &[char], i: &mut usize) -> Option<char> {
    let mut c = *p.get(*i)?;
    if c == '-' || c == ']' {
        return None;
    }
    if c == '\\' {
        *i += 1;
        c = *p.get(*i)?;
    }
    *i += 1;
    if *i >= p.len() {
        return None;
    }
    Some(c)
}

/// Go's `filepath.Match` for one path component.
pub fn match_component(pattern: &str, name: &str) -> Result<bool, PatternError> {
    Ok(Glob::new(pattern, Dialect::Component)?.matches(name))
}

/// Matches path components against pattern components, where a pattern component `**`
/// stands for any number of path components (none included). Dynamic programming over
/// (pattern component, path component): every component pattern is compiled once and
/// run once against each path component, O(pattern × path) in all.
pub fn match_components(pattern: &[&str], path: &[&str]) -> Result<bool, PatternError> {
    // `reach[j]`: the pattern components so far match the first j path components.
    let mut reach = vec![false; path.len() + 1];
    reach[0] = true;
    for part in pattern {
        if *part == "**" {
            for j in 1..reach.len() {
                reach[j] |= reach[j - 1];
            }
            continue;
        }
        let glob = Glob::new(part, Dialect::Component)?;
        for j in (0..path.len()).rev() {
            reach[j + 1] = reach[j] && glob.matches(path[j]);
        }
        reach[0] = false;
    }
    Ok(reach[path.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn bad(p: &str) -> Result<bool, PatternError> {
        Err(PatternError::BadPattern {
            pattern: p.to_string(),
        })
    }

    /// Go's `filepath.Match` table (path/filepath/match_test.go), without the cases about
    /// `/` inside a name, which component matching never sees.
    #[test]
    fn go_match_table() {
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(())),
            ("[-]", "-", Err(())),
            ("[x-]", "x", Err(())),
            ("[x-]", "-", Err(())),
            ("[x-]", "z", Err(())),
            ("[-x]", "x", Err(())),
            ("[-x]", "-", Err(())),
            ("[-x]", "a", Err(())),
            ("\\", "a", Err(())),
            ("[a-b-c]", "a", Err(())),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("a[", "x", Err(())),
            ("a/b[", "x", Err(())),
            ("*x", "xxx", Ok(true)),
        ];
        for (pattern, name, want) in cases {
            // A pattern with `/` is matched as Go does: `*`, `?` never cross it.
            let got = match_component(pattern, name);
            let want = match want {
                Ok(b) => Ok(*b),
                Err(()) => bad(pattern),
            };
            assert_eq!(got, want, "Match({pattern:?}, {name:?})");
        }
    }

    #[test]
    fn ignore_dialect_double_star() {
        let m = |p: &str, s: &str| Glob::new(p, Dialect::Ignore).unwrap().matches(s);
        assert!(m("**/x", "x"));
        assert!(m("**/x", "a/b/x"));
        assert!(!m("**/x", "a/bx"));
        assert!(m("a/**/b", "a/b"));
        assert!(m("a/**/b", "a/x/y/b"));
        assert!(!m("a/**/b", "ab"));
        assert!(m("a/**", "a/x/y"));
        assert!(m("**", "anything/at/all"));
        assert!(m("**", ""));
        assert!(m("**x", "a/x"));
        assert!(!m("**x", "ax"), "`**` is whole components");
        assert!(m("*.go", "a.go"));
        assert!(!m("*.go", "d/a.go"), "* does not cross /");
        assert!(m("d/?.go", "d/a.go"));
        assert!(Glob::new("a/[", Dialect::Ignore).is_err());
    }

    #[test]
    fn components_with_double_star() {
        let m = |p: &[&str], s: &[&str]| match_components(p, s).unwrap();
        assert!(m(&["**"], &[]));
        assert!(m(&["**", "*.rs"], &["main.rs"]));
        assert!(m(&["**", "*.rs"], &["a", "b", "main.rs"]));
        assert!(!m(&["src", "*.rs"], &["src", "a", "main.rs"]));
        assert!(m(&["a", "**", "b", "**"], &["a", "x", "b", "y", "z"]));
        assert!(!m(&["a", "**", "c"], &["a", "b"]));
        assert!(match_components(&["x", "[z"], &["x", "y"]).is_err());
    }

    /// A hang detector, not a speed test: backtracking on these inputs would take
    /// longer than the age of the universe; linear matching takes milliseconds, and the
    /// bound leaves room for a loaded CI machine.
    fn quick(what: &str, f: impl FnOnce() -> bool) -> bool {
        let start = Instant::now();
        let r = f();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
        r
    }

    #[test]
    fn hostile_patterns_finish_fast() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "a*".repeat(50));
        assert!(!quick("a*a*…b as a component", || match_component(
            &pattern, &text
        )
        .unwrap()));
        assert!(!quick("a*a*…b as an ignore line", || Glob::new(
            &pattern,
            Dialect::Ignore
        )
        .unwrap()
        .matches(&text)));
        let deep: Vec<&str> = std::iter::repeat_n("a", 2_000).collect();
        let stars: Vec<&str> = std::iter::repeat_n("**", 200).chain(["b"]).collect();
        assert!(!quick("**/**/…/b over a deep path", || match_components(
            &stars, &deep
        )
        .unwrap()));
        let deep_path = deep.join("/");
        let ignore = format!("{}b", "**/".repeat(200));
        assert!(!quick("**/**/…/b as an ignore line", || Glob::new(
            &ignore,
            Dialect::Ignore
        )
        .unwrap()
        .matches(&deep_path)));
    }

    proptest::proptest! {
        /// Any pattern, both dialects, any text: an answer or `BadPattern`, quickly.
        #[test]
        fn any_pattern_compiles_or_is_refused_and_matches_quickly(
            p in "[*?\\[\\]^!a-c/\\\\.-]{0,24}",
            t in "[a-c/.*\\[-]{0,120}",
        ) {
            crate::fuzz::timed("glob", || {
                for d in [Dialect::Component, Dialect::Ignore] {
                    if let Ok(g) = Glob::new(&p, d) {
                        let _ = g.matches(&t);
                    }
                }
                let pc: Vec<&str> = p.split('/').collect();
                let tc: Vec<&str> = t.split('/').collect();
                let _ = match_components(&pc, &tc);
            });
        }

        /// Every character escaped: the pattern is the text, nothing else.
        #[test]
        fn an_escaped_pattern_matches_exactly_its_text(
            s in "[a-c*?\\[\\].\\\\-]{0,12}",
            t in "[a-c*?\\[\\].\\\\-]{0,12}",
        ) {
            let escaped: String = s.chars().flat_map(|c| ['\\', c]).collect();
            for d in [Dialect::Component, Dialect::Ignore] {
                let g = Glob::new(&escaped, d).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                proptest::prop_assert!(g.matches(&s));
                proptest::prop_assert_eq!(g.matches(&t), s == t);
            }
        }
    }
}
