//! What the `syntax` and `check` directives may say.
//!
//! - `# syntax=` picks the frontend that reads the file. kiln *is* the Dockerfile 1.x
//!   frontend, so it accepts `docker/dockerfile` (also written `docker.io/docker/dockerfile`)
//!   tagged `1`, `1.N`, `1.N.M`, `labs`, `1-labs`, `1.N-labs`, `1.N.M-labs`, `latest` or
//!   untagged, each optionally pinned with `@sha256:<64 hex>`. Any other reference names
//!   an external frontend image, which kiln cannot run: that is an error at the
//!   directive's line, never silently ignored.
//! - `# check=` configures BuildKit's lint checks: `;`-separated `skip=<names|all>`,
//!   `experimental=<names|all>` and `error=<bool>` (BuildKit's `ParseLintOptions`: at most
//!   three parts, the last keeps any further `;`). The checks kiln runs ([`crate::lint`])
//!   honour `skip=` and `error=true`; `skip=` of names kiln does not know is accepted
//!   (BuildKit also ignores them). A malformed value is
//!   an error with BuildKit's message.

use crate::dockerfile::dump::go_quote;
use crate::dockerfile::instructions::mount::parse_go_bool;

/// A `syntax` or `check` directive kiln cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveValueError {
    #[error(
        "kiln cannot run external frontends: {} is not the docker/dockerfile 1.x frontend kiln implements (use docker/dockerfile:1, or remove the syntax directive)",
        go_quote(.0)
    )]
    ExternalFrontend(String),
    #[error("failed to parse check options: invalid check option {}", go_quote(.0))]
    CheckOption(String),
    #[error(
        "failed to parse check options: failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
        go_quote(.option),
        go_quote(.value)
    )]
    CheckBool { option: String, value: String },
}

/// Accepts `reference` (the first word of a `syntax` directive) when it names the
/// Dockerfile 1.x frontend.
pub fn check_syntax_reference(reference: &str) -> Result<(), DirectiveValueError> {
    let external = || DirectiveValueError::ExternalFrontend(reference.to_string());
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").ok_or_else(external)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(external());
        }
    }
    let (name, tag) = match name_and_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name_and_tag, None),
    };
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    if name != "docker/dockerfile" {
        return Err(external());
    }
    match tag {
        None | Some("latest") | Some("labs") => Ok(()),
        Some(t) if is_version_one(t.strip_suffix("-labs").unwrap_or(t)) => Ok(()),
        Some(_) => Err(external()),
    }
}

/// `1`, `1.N` or `1.N.M` with decimal N and M.
fn is_version_one(tag: &str) -> bool {
    let mut parts = tag.split('.');
    parts.next() == Some("1")
        && parts.clone().count() <= 2
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A `check` directive, read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckOptions {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub experimental_all: bool,
    pub experimental: Vec<String>,
    pub error_on_warning: bool,
}

/// Reads a `check` directive's value as BuildKit does.
pub fn parse_check_options(value: &str) -> Result<CheckOptions, DirectiveValueError> {
    let mut opts = CheckOptions::default();
    let value = value.trim();
    if value.is_empty() {
        return Ok(opts);
    }
    let names = |v: &str| -> Vec<String> { v.split(',').map(|r| r.trim().to_string()).collect() };
    for part in value.splitn(3, ';') {
        let Some((key, v)) = part.split_once('=') else {
            return Err(DirectiveValueError::CheckOption(part.to_string()));
        };
        let v = v.trim();
        match key.trim() {
            "skip" if v == "all" => opts.skip_all = true,
            "skip" => opts.skip = names(v),
            "experimental" if v == "all" => opts.experimental_all = true,
            "experimental" => opts.experimental = names(v),
            "error" => {
                opts.error_on_warning =
                    parse_go_bool(v).ok_or_else(|| DirectiveValueError::CheckBool {
                        option: part.to_string(),
                        value: v.to_string(),
                    })?
            }
            other => return Err(DirectiveValueError::CheckOption(other.to_string())),
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_dockerfile_1_frontend_in_every_spelling() {
        for name in ["docker/dockerfile", "docker.io/docker/dockerfile"] {
            for tag in [
                "",
                ":1",
                ":1.7",
                ":1.17.1",
                ":labs",
                ":1-labs",
                ":1.7-labs",
                ":1.7.1-labs",
                ":latest",
            ] {
                for digest in ["", DIGEST] {
                    let r = format!("{name}{tag}{digest}");
                    assert_eq!(check_syntax_reference(&r), Ok(()), "{r}");
                }
            }
        }
    }

    #[test]
    fn any_other_frontend_is_refused() {
        for r in [
            "docker/dockerfile:2",
            "docker/dockerfile:0.9",
            "docker/dockerfile:1.2.3.4",
            "docker/dockerfile:1.x",
            "docker/dockerfile:1.",
            "docker/dockerfile:1-rc",
            "docker/dockerfile:labs-1",
            "docker/dockerfile-upstream:master",
            "docker/dockerfile@sha256:abc",
            "docker/dockerfile:1@md5:0123",
            "example.com/docker/dockerfile:1",
            "docker.io/library/dockerfile:1",
            "tonistiigi/dockerfile:1",
            "localhost:5000/docker/dockerfile",
        ] {
            assert_eq!(
                check_syntax_reference(r),
                Err(DirectiveValueError::ExternalFrontend(r.into())),
                "{r}"
            );
        }
        assert_eq!(
            check_syntax_reference("foo/bar").unwrap_err().to_string(),
            "kiln cannot run external frontends: \"foo/bar\" is not the docker/dockerfile 1.x frontend kiln implements (use docker/dockerfile:1, or remove the syntax directive)"
        );
    }

    #[test]
    fn check_options_as_buildkit_reads_them() {
        let o = parse_check_options(" skip = JSONArgsRecommended, StageNameCasing ;error=true")
            .unwrap();
        assert_eq!(o.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(o.error_on_warning && !o.skip_all);
        let o = parse_check_options("skip=all;experimental=all;error=0").unwrap();
        assert!(o.skip_all && o.experimental_all && !o.error_on_warning);
        assert_eq!(parse_check_options("  "), Ok(CheckOptions::default()));
        // Unknown rule names are ignored, as BuildKit does.
        assert_eq!(
            parse_check_options("skip=NoSuchRule").unwrap().skip,
            ["NoSuchRule"]
        );
    }

    #[test]
    fn malformed_check_options_are_errors() {
        let msg = |v: &str| parse_check_options(v).unwrap_err().to_string();
        assert_eq!(
            msg("skip"),
            "failed to parse check options: invalid check option \"skip\""
        );
        assert_eq!(
            msg("ignore=all"),
            "failed to parse check options: invalid check option \"ignore\""
        );
        assert_eq!(
            msg("error=maybe"),
            "failed to parse check options: failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
        // The third part keeps any further `;`.
        assert_eq!(
            msg("skip=a;skip=b;error=true;x"),
            "failed to parse check options: failed to parse check option \"error=true;x\": strconv.ParseBool: parsing \"true;x\": invalid syntax"
        );
    }
}
