//! Builder flags of one instruction (BuildKit's `BFlags`): each instruction declares the
//! flags it knows with their kind, then the node's flag words are checked against them.
//!
//! - `--name=value` for string flags (a missing `=` is an error; `--name=` is empty);
//! - `--name`, `--name=true`, `--name=false` for booleans (case-insensitive);
//! - string-list flags may repeat (`--exclude`, `--mount`); other flags may not;
//! - an unknown flag is an error with a did-you-mean hint.

use std::collections::BTreeMap;

use crate::dockerfile::ast::Node;
use crate::dockerfile::source::{DockerfileError, Source};
use crate::dockerfile::suggest::suggest;

/// The kind of value a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Bool,
    String,
    Strings,
}

/// The flag values found on one instruction.
#[derive(Debug, Default)]
pub struct FlagValues {
    strings: BTreeMap<&'static str, String>,
    bools: BTreeMap<&'static str, bool>,
    lists: BTreeMap<&'static str, Vec<String>>,
}

impl FlagValues {
    /// A string flag's value, if the flag was given.
    pub fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).cloned()
    }
    /// A boolean flag's value, if the flag was given.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }
    /// Every value of a repeatable flag, in order.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }
    /// Whether the flag was given at all.
    pub fn used(&self, name: &str) -> bool {
        self.strings.contains_key(name)
            || self.bools.contains_key(name)
            || self.lists.contains_key(name)
    }
}

/// Checks `node`'s flags against `known` (name, kind) and collects their values.
pub fn parse_flags(
    source: &Source,
    node: &Node,
    known: &[(&'static str, FlagKind)],
) -> Result<FlagValues, DockerfileError> {
    let mut values = FlagValues::default();
    for (i, word) in node.flags.iter().enumerate() {
        let err = |msg: String| source.error(node.flag_position(i), msg);
        if word == "--" {
            break;
        }
        let Some(body) = word.strip_prefix("--") else {
            return Err(err(format!("arg should start with -- : {word}")));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag_name = format!("--{name}");
        let Some(&(key, kind)) = known.iter().find(|(k, _)| *k == name) else {
            let e = err(format!("unknown flag: {flag_name}"));
            return Err(match suggest(name, known.iter().map(|(k, _)| *k), true) {
                Some(s) => e.with_hint(format!("did you mean {s}?")),
                None => e,
            });
        };
        if kind != FlagKind::Strings && values.used(key) {
            return Err(err(format!("duplicate flag specified: {flag_name}")));
        }
        match kind {
            FlagKind::Bool => {
                let v = match value.map(str::to_lowercase).as_deref() {
                    Some("") => return Err(err(format!("missing a value on flag: {flag_name}"))),
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(_) => {
                        return Err(err(format!(
                            "expecting boolean value for flag {flag_name}, not: {}",
                            value.unwrap_or_default()
                        )))
                    }
                };
                values.bools.insert(key, v);
            }
            FlagKind::String => {
                let Some(v) = value else {
                    return Err(err(format!("missing a value on flag: {flag_name}")));
                };
                values.strings.insert(key, v.to_string());
            }
            FlagKind::Strings => {
                let Some(v) = value else {
                    return Err(err(format!("missing a value on flag: {flag_name}")));
                };
                values.lists.entry(key).or_default().push(v.to_string());
            }
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    fn flags(
        line: &str,
        known: &[(&'static str, FlagKind)],
    ) -> Result<FlagValues, DockerfileError> {
        let doc =
            parse("Dockerfile", format!("{line}\n").as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        parse_flags(&doc.source, &doc.nodes[0], known)
    }

    /// The message of the error `line` gives (no location, no frame).
    fn error_of(line: &str, known: &[(&'static str, FlagKind)]) -> String {
        match flags(line, known) {
            Ok(_) => panic!("{line}: no error"),
            Err(e) => e.summary(),
        }
    }

    const K: &[(&str, FlagKind)] = &[
        ("str", FlagKind::String),
        ("b", FlagKind::Bool),
        ("list", FlagKind::Strings),
    ];

    #[test]
    fn values_and_errors() {
        let v = flags("COPY --str=x --b --list=1 --list=2 a b", K).unwrap();
        assert_eq!(v.string("str").as_deref(), Some("x"));
        assert_eq!(v.bool("b"), Some(true));
        assert_eq!(v.list("list"), ["1", "2"]);
        assert_eq!(
            flags("COPY --str= a b", K)
                .unwrap()
                .string("str")
                .as_deref(),
            Some("")
        );
        assert_eq!(
            flags("COPY --b=FALSE a b", K).unwrap().bool("b"),
            Some(false)
        );
        assert_eq!(
            error_of("COPY --str a b", K),
            "missing a value on flag: --str"
        );
        assert_eq!(error_of("COPY --b= a b", K), "missing a value on flag: --b");
        assert_eq!(
            error_of("COPY --b=yes a b", K),
            "expecting boolean value for flag --b, not: yes"
        );
        assert_eq!(
            error_of("COPY --str=1 --str=2 a b", K),
            "duplicate flag specified: --str"
        );
        assert_eq!(
            error_of("COPY --boo a b", K),
            "unknown flag: --boo (did you mean b?)"
        );
        assert!(!flags("COPY a b", K).unwrap().used("b"));
    }
}
