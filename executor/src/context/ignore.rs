//! `.dockerignore`: which context paths a build may not see, with Docker's rules
//! (moby's `patternmatcher`): one pattern per line, `#` comments, blank lines skipped,
//! patterns cleaned and made relative, `*` and `?` within one path component, `**` for
//! any number of components, `[…]` classes, `\` escapes, `!` re-including what an
//! earlier pattern excluded; the last matching pattern wins, and a path is excluded when
//! it or one of its parent directories is. `<Dockerfile>.dockerignore` next to the
//! Dockerfile takes precedence over the context's `.dockerignore`.

use std::path::Path;

use super::pattern::{clean, Dialect, Glob, PatternError};

/// Why the ignore rules could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// The ignore file exists but could not be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// A line is not a valid pattern (Go's `ErrBadPattern`).
    #[error("invalid .dockerignore pattern {pattern:?}: {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: PatternError,
    },
}

/// One pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// The cleaned pattern, as written after `!`.
    text: String,
    /// The compiled pattern; a malformed one matches nothing.
    glob: Result<Glob, PatternError>,
    exclusion: bool,
}

/// The rules of one build context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

impl IgnoreRules {
    /// Parses the text of an ignore file. A malformed pattern is kept but matches
    /// nothing; [`IgnoreRules::check`] reports it.
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
                glob: Glob::new(&pat, Dialect::Ignore),
                text: pat,
                exclusion,
            });
        }
        IgnoreRules { rules }
    }

    /// [`IgnoreRules::parse`], failing on the first malformed pattern (as Docker does).
    pub fn parse_strict(text: &str) -> Result<IgnoreRules, IgnoreError> {
        let rules = IgnoreRules::parse(text);
        rules.check()?;
        Ok(rules)
    }

    /// The first malformed pattern, if any.
    pub fn check(&self) -> Result<(), IgnoreError> {
        for r in &self.rules {
            if let Err(source) = &r.glob {
                return Err(IgnoreError::BadPattern {
                    pattern: r.text.clone(),
                    source: source.clone(),
                });
            }
        }
        Ok(())
    }

    /// The rules for a build: `<dockerfile>.dockerignore` when it exists, else
    /// `<context>/.dockerignore`, else none. Malformed patterns are kept (matching
    /// nothing); call [`IgnoreRules::check`] to refuse them.
    pub fn load(context: &Path, dockerfile: Option<&Path>) -> Result<IgnoreRules, IgnoreError> {
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
            Err(e) => Err(e.into()),
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
        // The path itself and each of its parents, as patternmatcher's
        // MatchesOrParentMatches.
        let mut candidates: Vec<&str> = vec![&path];
        for (i, c) in path.char_indices() {
            if c == '/' {
                candidates.push(&path[..i]);
            }
        }
        let mut excluded = false;
        for r in &self.rules {
            let Ok(glob) = &r.glob else { continue };
            if candidates.iter().any(|c| glob.matches(c)) {
                excluded = !r.exclusion;
            }
        }
        excluded
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

    #[test]
    fn double_star_leading_slash_and_dot() {
        let r = rules("**/x\n");
        assert!(r.excluded("x"));
        assert!(r.excluded("a/b/x"));
        assert!(r.excluded("a/x/inside"), "a parent that matches");
        assert!(!r.excluded("a/bx"));
        let r = rules("/abs/*.txt\n./rel\n");
        assert!(r.excluded("abs/a.txt"));
        assert!(!r.excluded("x/abs/a.txt"));
        assert!(r.excluded("rel"));
        assert!(r.excluded("rel/deep/file"));
        let r = rules("a/**/b\n");
        assert!(r.excluded("a/b"));
        assert!(r.excluded("a/x/y/b"));
        assert!(!r.excluded("a/x/yb"));
    }

    #[test]
    fn reinclusion_order() {
        let r = rules("*\n!keep\n!dir/*.go\ndir/skip.go\n");
        assert!(r.excluded("other"));
        assert!(!r.excluded("keep"));
        assert!(!r.excluded("dir/a.go"));
        assert!(r.excluded("dir/skip.go"));
        assert!(r.excluded("dir/a.txt"));
    }

    #[test]
    fn malformed_patterns_are_reported() {
        let r = rules("ok\nbad[\n");
        assert!(r.excluded("ok"));
        assert!(!r.excluded("bad["), "a malformed pattern matches nothing");
        let e = r.check().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid .dockerignore pattern \"bad[\": syntax error in pattern"
        );
        assert!(IgnoreRules::parse_strict("a\n[z-\n").is_err());
        assert!(IgnoreRules::parse_strict("a\n!b\n").is_ok());
    }

    proptest::proptest! {
        /// Any `.dockerignore` (comments, exceptions, classes, `**`, escapes) and any
        /// path: parsed, checked and matched without a panic, quickly.
        #[test]
        fn any_dockerignore_parses_and_matches_quickly(
            text in "([!#/ *?\\[\\]^a-c.\\\\-]{0,20}\r?\n){0,12}",
            paths in proptest::collection::vec("[a-c./*]{0,40}", 0..8),
        ) {
            crate::fuzz::timed("dockerignore", || {
                let r = IgnoreRules::parse(&text);
                let _ = r.check();
                let _ = IgnoreRules::parse_strict(&text);
                for p in &paths {
                    let _ = r.excluded(p);
                }
            });
        }
    }
}
