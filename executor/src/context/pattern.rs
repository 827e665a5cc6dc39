//! Source patterns of COPY and ADD: Go's `filepath.Match` per path component (`*`, `?`,
//! `[a-z]`, `[^a]`, `\` escapes), plus `**` for any number of components, as BuildKit's
//! file walker accepts them. Written here because the `glob` crates differ from Go in
//! character classes and escapes, and BuildKit's behaviour is what users expect. The
//! matching itself is the shared engine in [`glob`] (also used by `.dockerignore`).

// The engine lives in its own file next to this one, self-contained, so it can move to
// wherever the build's modules settle.
#[path = "glob.rs"]
pub mod glob;

pub use glob::{Dialect, Glob, PatternError};

/// `p` as a clean relative path: no empty or `.` components, `..` taken back (never
/// above the start), joined with `/`.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// `p` cleaned as an absolute path (`/` for the root).
pub fn clean_abs(p: &str) -> String {
    format!("/{}", clean(p))
}

/// Whether `s` holds a wildcard.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's `filepath.Match` for one path component (no `/` in either); a malformed
/// pattern matches nothing.
pub fn match_component(pattern: &str, name: &str) -> bool {
    glob::match_component(pattern, name).unwrap_or(false)
}

/// Matches a `/`-separated relative path against a pattern with `**` support; a
/// malformed pattern matches nothing (see [`try_match_path`] for the error).
pub fn match_path(pattern: &str, path: &str) -> bool {
    try_match_path(pattern, path).unwrap_or(false)
}

/// [`match_path`], with Go's `ErrBadPattern` for a malformed pattern.
pub fn try_match_path(pattern: &str, path: &str) -> Result<bool, PatternError> {
    let p: Vec<&str> = components(pattern).collect();
    let n: Vec<&str> = components(path).collect();
    glob::match_components(&p, &n)
}

fn components(s: &str) -> impl Iterator<Item = &str> {
    s.split('/').filter(|c| !c.is_empty() && *c != ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_match_as_go() {
        assert!(match_component("*.txt", "a.txt"));
        assert!(!match_component("*.txt", "a.txt.bak"));
        assert!(match_component("file?", "file1"));
        assert!(match_component("[a-c]x", "bx"));
        assert!(!match_component("[^a-c]x", "bx"));
        assert!(match_component("\\*", "*"));
        assert!(!match_component("[", "["));
        assert!(try_match_path("a/[", "a/b").is_err());
        assert_eq!(try_match_path("a/*", "a/b"), Ok(true));
    }

    #[test]
    fn paths_match_with_double_star() {
        assert!(match_path("src/*.rs", "src/main.rs"));
        assert!(!match_path("src/*.rs", "src/a/main.rs"));
        assert!(match_path("**/*.rs", "src/a/main.rs"));
        assert!(match_path("**/*.rs", "main.rs"));
        assert!(match_path("/dir/*", "dir/x"));
    }
}
