//! Source patterns of COPY and ADD: Go's `filepath.Match` per path component (`*`, `?`,
//! `[a-z]`, `[^a]`, `\` escapes), plus `**` for any number of components, as BuildKit's
//! file walker accepts them. Written here because the `glob` crates differ from Go in
//! character classes and escapes, and BuildKit's behaviour is what users expect.

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

/// Go's `filepath.Match` for one path component (no `/` in either).
pub fn match_component(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_here(&p, &n)
}

fn match_here(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => {
            let rest = &p[1..];
            (0..=n.len()).any(|i| match_here(rest, &n[i..]))
        }
        Some('?') => !n.is_empty() && match_here(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            match class(&p[1..], *c) {
                Some((ok, used)) => ok && match_here(&p[1 + used..], &n[1..]),
                None => false,
            }
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && match_here(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && match_here(&p[1..], &n[1..]),
    }
}

/// Matches `c` against the class starting after `[`; returns (matched, chars used incl. `]`).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if lo == '\\' {
            i += 1;
            lo = *p.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            hi = p[i + 1];
            if hi == '\\' {
                hi = *p.get(i + 2)?;
                i += 1;
            }
            i += 2;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

/// Matches a `/`-separated relative path against a pattern with `**` support.
pub fn match_path(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let n: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    match_parts(&p, &n)
}

fn match_parts(p: &[&str], n: &[&str]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(&"**") => (0..=n.len()).any(|i| match_parts(&p[1..], &n[i..])),
        Some(pc) => !n.is_empty() && match_component(pc, n[0]) && match_parts(&p[1..], &n[1..]),
    }
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
