//! `RUN --mount=…` values: CSV `key=value` fields parsed into a typed [`RunMount`] with
//! BuildKit's defaults and validation errors.
//!
//! BuildKit reads a mount twice: when the Dockerfile is parsed only `from` is looked at
//! (it cannot hold variables, because it decides the build graph), and when the stage is
//! dispatched every value is expanded with the stage's ARG/ENV and the whole mount is
//! validated. [`parse_mount`] does both, depending on whether it is given an expander.

use crate::dockerfile::dump::go_quote;
use crate::dockerfile::shell::ShellError;
use crate::dockerfile::suggest::suggest;

/// What a RUN mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// One `--mount` of a RUN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunMount {
    pub kind: MountKind,
    /// Stage or image to mount from (bind, cache); never expanded.
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: bool,
    /// Cache id, secret id or ssh id.
    pub id: Option<String>,
    /// `None` when not given (BuildKit's default is shared).
    pub sharing: Option<CacheSharing>,
    pub required: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
    /// True when this value was read without expansion (it holds `$` references): only
    /// `from` is known until the stage is dispatched.
    pub needs_expansion: bool,
}

impl Default for RunMount {
    fn default() -> Self {
        RunMount {
            kind: MountKind::Bind,
            from: None,
            source: None,
            target: None,
            read_only: true,
            id: None,
            sharing: None,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
            needs_expansion: false,
        }
    }
}

const ALL_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// The closest of `options` to a mistyped `value`, shown as ` (did you mean …?)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DidYouMean(pub Option<String>);

impl DidYouMean {
    pub(crate) fn of(value: &str, options: &[&str]) -> Self {
        DidYouMean(suggest(value, options.iter().copied(), true))
    }
}

impl std::fmt::Display for DidYouMean {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(s) => write!(f, " (did you mean {s}?)"),
            None => Ok(()),
        }
    }
}

/// For a value outside a small fixed set: BuildKit's ` (did you mean …?)` when some
/// option is close, else the whole set, ` (allowed: a, b, c)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuggestOrAllowed {
    pub closest: DidYouMean,
    pub allowed: &'static [&'static str],
}

impl SuggestOrAllowed {
    pub(crate) fn of(value: &str, allowed: &'static [&'static str]) -> Self {
        SuggestOrAllowed {
            closest: DidYouMean::of(value, allowed),
            allowed,
        }
    }
}

impl std::fmt::Display for SuggestOrAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.closest.0 {
            Some(_) => self.closest.fmt(f),
            None => write!(f, " (allowed: {})", self.allowed.join(", ")),
        }
    }
}

/// The values of `type=`.
pub const MOUNT_TYPES: &[&str] = &["bind", "cache", "tmpfs", "secret", "ssh"];
/// The values of `sharing=`.
pub const SHARING_MODES: &[&str] = &["shared", "private", "locked"];

/// A CSV record that does not split (Go's `encoding/csv` messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("extraneous or missing \" in quoted-field")]
    QuoteInQuotedField,
    #[error("bare \" in non-quoted-field")]
    BareQuote,
}

/// Why a `--mount` value is not a valid mount (BuildKit's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountSpecError {
    #[error("failed to parse csv mounts: {0}")]
    Csv(#[source] CsvError),
    #[error(transparent)]
    Expand(#[from] ShellError),
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyNotForType { key: String, kind: &'static str },
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromHasVariable,
    #[error("invalid value for {key}: {value}")]
    InvalidValue { key: String, value: String },
    #[error("unsupported mount type {}{suggestion}", go_quote(.value))]
    UnsupportedType {
        value: String,
        suggestion: SuggestOrAllowed,
    },
    #[error("unsupported sharing value {}{suggestion}", go_quote(.value))]
    UnsupportedSharing {
        value: String,
        suggestion: SuggestOrAllowed,
    },
    #[error("invalid value {value} for {key}")]
    InvalidNumber { key: &'static str, value: String },
    #[error("unexpected key '{key}' in '{field}'{suggestion}")]
    UnknownKey {
        key: String,
        field: String,
        suggestion: DidYouMean,
    },
    #[error("{key} not allowed for {} type mounts", go_quote(.kind))]
    KeyNotAllowed {
        key: &'static str,
        kind: &'static str,
    },
    #[error("secret mount should not have a from")]
    SecretWithFrom,
    #[error("secret mount should not define sharing")]
    SecretWithSharing,
    #[error("invalid secret mount. one of source, target required")]
    SecretWithoutTarget,
    #[error("both source and id can't be set")]
    SourceAndId,
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(&'static str),
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Expands one mount value (the stage's variables, at dispatch).
pub type MountExpander<'a> = &'a dyn Fn(&str) -> Result<String, ShellError>;

/// Parses one `--mount` value. With `expand`, every value but `from` goes through it and
/// the mount is fully validated; without, only `from` is read (and checked for `$`).
pub fn parse_mount(
    spec: &str,
    expand: Option<MountExpander<'_>>,
) -> Result<RunMount, MountSpecError> {
    let fields = csv_fields(spec).map_err(MountSpecError::Csv)?;
    let mut m = RunMount {
        needs_expansion: expand.is_none(),
        ..RunMount::default()
    };
    let mut ro_auto = true;
    let mut sharing_set = false;
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(raw) = value else {
            if expand.is_none() {
                continue;
            }
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountKind::Secret | MountKind::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(MountSpecError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    })
                }
                _ => return Err(MountSpecError::NotKeyValue(field)),
            }
            continue;
        };
        let value = match expand {
            Some(f) => f(raw)?,
            None if key == "from" => {
                if raw.find('$').is_some_and(|i| i + 1 != raw.len()) {
                    return Err(MountSpecError::FromHasVariable);
                }
                raw.to_string()
            }
            None => continue,
        };
        let bad = |k: &str| MountSpecError::InvalidValue {
            key: k.to_string(),
            value: value.clone(),
        };
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountKind::Bind,
                    "cache" => MountKind::Cache,
                    "tmpfs" => MountKind::Tmpfs,
                    "secret" => MountKind::Secret,
                    "ssh" => MountKind::Ssh,
                    _ => {
                        return Err(MountSpecError::UnsupportedType {
                            suggestion: SuggestOrAllowed::of(&value, MOUNT_TYPES),
                            value,
                        })
                    }
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.read_only = parse_go_bool(&value).ok_or_else(|| bad(&key))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_go_bool(&value).ok_or_else(|| bad(&key))?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountKind::Secret | MountKind::Ssh) {
                    return Err(MountSpecError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                m.required = parse_go_bool(&value).ok_or_else(|| bad(&key))?;
            }
            "size" => {
                if m.kind != MountKind::Tmpfs {
                    return Err(MountSpecError::KeyNotForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                m.size = Some(ram_in_bytes(&value).ok_or_else(|| bad(&key))?);
            }
            "id" => m.id = Some(value),
            "sharing" => {
                sharing_set = true;
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(MountSpecError::UnsupportedSharing {
                            suggestion: SuggestOrAllowed::of(&value, SHARING_MODES),
                            value,
                        })
                    }
                });
            }
            "mode" => {
                m.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| {
                    MountSpecError::InvalidNumber {
                        key: "mode",
                        value: value.clone(),
                    }
                })?)
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| MountSpecError::InvalidNumber {
                            key: "uid",
                            value: value.clone(),
                        })?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| MountSpecError::InvalidNumber {
                            key: "gid",
                            value: value.clone(),
                        })?,
                )
            }
            "env" => m.env = Some(value),
            _ => {
                return Err(MountSpecError::UnknownKey {
                    suggestion: DidYouMean::of(&key, ALL_KEYS),
                    key,
                    field,
                })
            }
        }
    }
    if expand.is_none() {
        return Ok(m);
    }
    if !matches!(
        m.kind,
        MountKind::Secret | MountKind::Ssh | MountKind::Cache
    ) {
        for (key, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(MountSpecError::KeyNotAllowed {
                    key,
                    kind: m.kind.as_str(),
                });
            }
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountKind::Cache | MountKind::Tmpfs);
    }
    if m.kind == MountKind::Secret {
        if m.from.is_some() {
            return Err(MountSpecError::SecretWithFrom);
        }
        if sharing_set {
            return Err(MountSpecError::SecretWithSharing);
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err(MountSpecError::SecretWithoutTarget);
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(MountSpecError::SourceAndId);
        }
    }
    if sharing_set && m.kind != MountKind::Cache {
        return Err(MountSpecError::SharingNotCache(m.kind.as_str()));
    }
    Ok(m)
}

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote).
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, CsvError> {
    let mut fields = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(CsvError::QuoteInQuotedField),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
            match chars.get(i) {
                None | Some(',') => {}
                Some(_) => return Err(CsvError::QuoteInQuotedField),
            }
        } else {
            while let Some(&c) = chars.get(i) {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(CsvError::BareQuote);
                }
                field.push(c);
                i += 1;
            }
        }
        fields.push(field);
        if chars.get(i) == Some(&',') {
            i += 1;
            continue;
        }
        return Ok(fields);
    }
}

/// Docker's `units.RAMInBytes`: `128m`, `1.5g`, `512k`, `1024`, `2GiB` (binary units).
pub fn ram_in_bytes(s: &str) -> Option<u64> {
    let num_len = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (num, rest) = s.split_at(num_len);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.contains("..") {
        return None;
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut it = rest.chars();
    let (mult, rest): (u64, &str) = match it.next().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (1 << 10, it.as_str()),
        Some('m') => (1 << 20, it.as_str()),
        Some('g') => (1 << 30, it.as_str()),
        Some('t') => (1 << 40, it.as_str()),
        Some('p') => (1 << 50, it.as_str()),
        _ => (1, rest),
    };
    let rest = rest.strip_prefix(['i', 'I']).unwrap_or(rest);
    let rest = rest.strip_prefix(['b', 'B']).unwrap_or(rest);
    if !rest.is_empty() {
        return None;
    }
    // Go's regexp allows several dots (`1.2.3`) and ParseFloat then fails.
    let value: f64 = num.parse().ok()?;
    Some((value * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(spec: &str) -> Result<RunMount, MountSpecError> {
        let id = |s: &str| Ok(s.to_string());
        parse_mount(spec, Some(&id))
    }

    #[test]
    fn defaults_by_type() {
        let m = full("target=/ctx").unwrap();
        assert_eq!((m.kind, m.read_only), (MountKind::Bind, true));
        let m = full("type=cache,target=/c").unwrap();
        assert_eq!((m.kind, m.read_only), (MountKind::Cache, false));
        let m = full("type=TMPFS,target=/t,size=128m").unwrap();
        assert_eq!(
            (m.kind, m.read_only, m.size),
            (MountKind::Tmpfs, false, Some(128 << 20))
        );
        let m = full("type=bind,target=/b,rw").unwrap();
        assert!(!m.read_only);
        let m = full("type=secret,id=tok,required,mode=0440,uid=1,gid=2,env=TOKEN").unwrap();
        assert_eq!(
            (m.required, m.mode, m.uid, m.gid),
            (true, Some(0o440), Some(1), Some(2))
        );
        assert!(m.read_only);
        let m = full("Type=cache,TARGET=/c,sharing=LOCKED,mode=0751").unwrap();
        assert_eq!(
            (m.sharing, m.mode),
            (Some(CacheSharing::Locked), Some(0o751))
        );
        let m = full("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn buildkit_errors() {
        assert_eq!(
            full("typ=tmpfs").unwrap_err().to_string(),
            "unexpected key 'typ' in 'typ=tmpfs' (did you mean type?)"
        );
        assert_eq!(
            full("type=tmp").unwrap_err().to_string(),
            "unsupported mount type \"tmp\" (did you mean tmpfs?)"
        );
        assert_eq!(
            full("target=/a,required").unwrap_err().to_string(),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            full("target=/a,foo").unwrap_err().to_string(),
            "invalid field 'foo' must be a key=value pair"
        );
        assert_eq!(
            full("ro=x").unwrap_err().to_string(),
            "invalid value for ro: x"
        );
        assert_eq!(
            full("target=/a,size=1m").unwrap_err().to_string(),
            "unexpected key 'size' for mount type 'bind'"
        );
        assert_eq!(
            full("target=/a,mode=0755").unwrap_err().to_string(),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            full("type=tmpfs,target=/a,uid=1").unwrap_err().to_string(),
            "uid not allowed for \"tmpfs\" type mounts"
        );
        assert_eq!(
            full("target=/a,sharing=private").unwrap_err().to_string(),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            full("type=cache,target=/a,sharing=x")
                .unwrap_err()
                .to_string(),
            "unsupported sharing value \"x\" (allowed: shared, private, locked)"
        );
        assert_eq!(
            full("type=cache,target=/a,sharing=privat")
                .unwrap_err()
                .to_string(),
            "unsupported sharing value \"privat\" (did you mean private?)"
        );
        assert_eq!(
            full("type=overlay,target=/a").unwrap_err().to_string(),
            "unsupported mount type \"overlay\" (allowed: bind, cache, tmpfs, secret, ssh)"
        );
        assert_eq!(
            full("type=secret,id=a,from=b").unwrap_err().to_string(),
            "secret mount should not have a from"
        );
        assert_eq!(
            full("type=secret,id=a,sharing=shared")
                .unwrap_err()
                .to_string(),
            "secret mount should not define sharing"
        );
        assert_eq!(
            full("type=secret").unwrap_err().to_string(),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            full("type=secret,id=a,src=b").unwrap_err().to_string(),
            "both source and id can't be set"
        );
        assert_eq!(
            full("type=cache,target=/a,mode=9").unwrap_err().to_string(),
            "invalid value 9 for mode"
        );
        assert!(full("target=\"/a")
            .unwrap_err()
            .to_string()
            .starts_with("failed to parse csv mounts"));
    }

    #[test]
    fn from_is_read_without_expansion() {
        let m = parse_mount("type=$T,from=build,target=$X", None).unwrap();
        assert_eq!(m.from.as_deref(), Some("build"));
        assert!(m.needs_expansion);
        assert_eq!(
            parse_mount("from=$x", None).unwrap_err().to_string(),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert!(parse_mount("from=abc$", None).is_ok());
    }

    #[test]
    fn ram_units() {
        assert_eq!(ram_in_bytes("128m"), Some(134_217_728));
        assert_eq!(ram_in_bytes("1.5g"), Some(1_610_612_736));
        assert_eq!(ram_in_bytes("512"), Some(512));
        assert_eq!(ram_in_bytes("2GiB"), Some(2 << 30));
        assert_eq!(ram_in_bytes("1 kb"), Some(1024));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("1q"), None);
    }
}
