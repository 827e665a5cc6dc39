//! "Did you mean …?" suggestions for misspelt names (instructions, flags, mount keys,
//! stage names), as BuildKit makes them: the closest option at an edit distance below 3.

/// The closest of `options` to `value`, if one is within edit distance 2 and `value` is
/// not itself an option. Case-insensitive matching returns the option in `value`'s case
/// when `value` is all lower or all upper case.
pub fn suggest<'a>(
    value: &str,
    options: impl IntoIterator<Item = &'a str>,
    case_sensitive: bool,
) -> Option<String> {
    let norm = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let val = norm(value);
    let mut best: Option<(usize, String)> = None;
    let mut sorted: Vec<&str> = options.into_iter().collect();
    sorted.sort_unstable();
    for opt in sorted {
        let o = norm(opt);
        if o == val {
            return None;
        }
        let d = edit_distance(&val, &o);
        if d < 3 && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, o));
        }
    }
    best.map(|(_, m)| {
        if case_sensitive {
            m
        } else if value == value.to_lowercase() {
            m.to_lowercase()
        } else if value == value.to_uppercase() {
            m.to_uppercase()
        } else {
            m
        }
    })
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_in_the_callers_case() {
        let ins = ["ENTRYPOINT", "ENV", "EXPOSE"];
        assert_eq!(
            suggest("FNTRYPOINT", ins, false).as_deref(),
            Some("ENTRYPOINT")
        );
        assert_eq!(
            suggest("fntrypoint", ins, false).as_deref(),
            Some("entrypoint")
        );
        assert_eq!(
            suggest("bulid", ["build", "test"], true).as_deref(),
            Some("build")
        );
        assert_eq!(suggest("nosuch", ["build", "test"], true), None);
        assert_eq!(suggest("build", ["build"], true), None);
    }
}
