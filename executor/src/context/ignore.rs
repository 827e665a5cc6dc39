//! `.dockerignore`: which context paths a build may not see, with Docker's rules
//! (moby's `patternmatcher`): one pattern per line, `#` comments, blank lines skipped,
//! patterns cleaned and made relative, `*` and `?` within one path component, `**` for
//! any number of components, `[…]` classes, `\` escapes, `!` re-including what an
//! earlier pattern excluded; the last matching pattern wins, and a path is excluded when
//! it or one of its parent directories is. `<Dockerfile>.dockerignore` next to the
//! Dockerfile takes precedence over the context's `.dockerignore`.

use std::path::Path;

use super::pattern::clean;

/// One pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    pattern: Vec<char>,
    exclusion: bool,
}

/// The rules of one build context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

impl IgnoreRules {
    /// Parses the text of an ignore file.
    pub fn parse(text: &str) -> IgnoreRules {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, pat) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pat = clean(pat);
            if pat.is_empty() {
                continue;
            }
            rules.push(Rule {
                pattern: pat.chars().collect(),
                exclusion,
            });
        }
        IgnoreRules { rules }
    }

    /// The rules for a build: `<dockerfile>.dockerignore` when it exists, else
    /// `<context>/.dockerignore`, else none.
    pub fn load(context: &Path, dockerfile: Option<&Path>) -> std::io::Result<IgnoreRules> {
        if let Some(df) = dockerfile {
            let mut name = df.as_os_str().to_owned();
            name.push(".dockerignore");
            if let Ok(text) = std::fs::read_to_string(&name) {
                return Ok(IgnoreRules::parse(&text));
            }
        }
        match std::fs::read_to_string(context.join(".dockerignore")) {
            Ok(text) => Ok(IgnoreRules::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IgnoreRules::default()),
            Err(e) => Err(e),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule re-includes paths (then an excluded directory must still be
    /// walked, for what a later `!` rule brings back).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exclusion)
    }

    /// Whether the context-relative `path` is excluded.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        if path.is_empty() {
            return false;
        }
        let chars: Vec<char> = path.chars().collect();
        // The path itself and each of its parents, as patternmatcher's
        // MatchesOrParentMatches.
        let mut candidates: Vec<&[char]> = vec![&chars];
        for (i, c) in chars.iter().enumerate() {
            if *c == '/' {
                candidates.push(&chars[..i]);
            }
        }
        let mut excluded = false;
        for r in &self.rules {
            if candidates.iter().any(|c| glob(&r.pattern, c)) {
                excluded = !r.exclusion;
            }
        }
        excluded
    }
}

/// Matches `p` against the whole of `s` (`/`-separated).
fn glob(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            // `**/` matches zero or more whole components; a trailing `**` anything.
            let rest = &p[2..];
            if rest.first() == Some(&'/') {
                let after = &rest[1..];
                if glob(after, s) {
                    return true;
                }
                (0..s.len()).any(|i| s[i] == '/' && glob(after, &s[i + 1..]))
            } else {
                (0..=s.len()).any(|i| glob(rest, &s[i..]))
            }
        }
        Some('*') => {
            let rest = &p[1..];
            let mut i = 0;
            loop {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if i >= s.len() || s[i] == '/' {
                    return false;
                }
                i += 1;
            }
        }
        Some('?') => s.first().is_some_and(|c| *c != '/') && glob(&p[1..], &s[1..]),
        Some('[') => {
            let Some(c) = s.first() else { return false };
            if *c == '/' {
                return false;
            }
            let mut i = 1;
            let negate = matches!(p.get(1), Some('^') | Some('!'));
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            loop {
                let Some(&lo) = p.get(i) else { return false };
                if lo == ']' && !first {
                    i += 1;
                    break;
                }
                first = false;
                let lo = if lo == '\\' {
                    i += 1;
                    match p.get(i) {
                        Some(x) => *x,
                        None => return false,
                    }
                } else {
                    lo
                };
                i += 1;
                let mut hi = lo;
                if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
                    hi = p[i + 1];
                    i += 2;
                }
                if lo <= *c && *c <= hi {
                    matched = true;
                }
            }
            matched != negate && glob(&p[i..], &s[1..])
        }
        Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob(&p[2..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(t: &str) -> IgnoreRules {
        IgnoreRules::parse(t)
    }

    #[test]
    fn docker_semantics() {
        let r = rules("# comment\n\n*.md\n!README.md\ntemp?\n/build/\n**/*.log\nnode_modules\n");
        assert!(r.excluded("notes.md"));
        assert!(!r.excluded("README.md"));
        assert!(!r.excluded("docs/notes.md"), "* does not cross /");
        assert!(r.excluded("temp1"));
        assert!(r.excluded("build"));
        assert!(r.excluded("build/out/x.o"), "children of an excluded dir");
        assert!(r.excluded("a/b/c.log"));
        assert!(r.excluded("c.log"));
        assert!(r.excluded("node_modules/x/y.js"));
        assert!(!r.excluded("src/main.rs"));
    }

    #[test]
    fn last_match_wins_and_exceptions_reach_into_dirs() {
        let r = rules("docs\n!docs/keep.txt\n");
        assert!(r.excluded("docs/other.txt"));
        assert!(!r.excluded("docs/keep.txt"));
        assert!(r.has_exceptions());
        let r = rules("!a.txt\n*.txt\n");
        assert!(r.excluded("a.txt"));
        let r = rules("**\n!src\n");
        assert!(r.excluded("Makefile"));
        assert!(!r.excluded("src/lib.rs"));
    }
}
