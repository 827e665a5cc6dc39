//! Platforms (`linux/amd64`, `linux/arm/v7`) and the automatic platform ARGs BuildKit
//! defines for every build (`BUILDPLATFORM`, `TARGETARCH`, ...).

use std::fmt;

/// Why a platform string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: expected os[/arch[/variant]]")]
    Malformed(String),
    #[error("invalid platform {text:?}: unknown operating system or architecture {name:?}")]
    UnknownName { text: String, name: String },
    #[error("invalid platform {text:?}: unknown operating system {os:?}")]
    UnknownOs { text: String, os: String },
    #[error("invalid platform {0:?}")]
    Empty(String),
}

/// An OCI platform: operating system, architecture and optional variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform kiln runs on, in OCI names (`x86_64` is `amd64`, `aarch64` is `arm64`).
    pub fn host() -> Platform {
        let (architecture, variant) = normalize_arch(std::env::consts::ARCH, None);
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture,
            variant,
        }
    }

    /// Parses `os[/arch[/variant]]` as containerd does for the common forms; architecture
    /// aliases are normalised (`x86_64` → `amd64`, `aarch64` → `arm64`, `armhf` → `arm/v7`).
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(PlatformError::Malformed(text.to_string()));
        }
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        let host = Platform::host();
        match lower.as_slice() {
            [one] if is_known_os(one) => Ok(Platform {
                os: one.clone(),
                ..host
            }),
            [one] if is_known_arch(one) => {
                let (architecture, variant) = normalize_arch(one, None);
                Ok(Platform {
                    os: host.os,
                    architecture,
                    variant,
                })
            }
            [one] => Err(PlatformError::UnknownName {
                text: text.to_string(),
                name: one.clone(),
            }),
            [os, arch, rest @ ..] => {
                if !is_known_os(os) {
                    return Err(PlatformError::UnknownOs {
                        text: text.to_string(),
                        os: os.clone(),
                    });
                }
                let (architecture, variant) =
                    normalize_arch(arch, rest.first().map(String::as_str));
                Ok(Platform {
                    os: os.clone(),
                    architecture,
                    variant,
                })
            }
            [] => Err(PlatformError::Empty(text.to_string())),
        }
    }

    /// The automatic ARGs for this build: `BUILD*` from `build`, `TARGET*` from `target`,
    /// and `TARGETSTAGE` (the target's name, or `default`). Order as BuildKit defines them.
    pub fn automatic_args(
        build: &Platform,
        target: &Platform,
        target_stage: &str,
    ) -> Vec<(String, String)> {
        let stage = if target_stage.is_empty() {
            "default"
        } else {
            target_stage
        };
        vec![
            ("BUILDPLATFORM".into(), build.to_string()),
            ("BUILDOS".into(), build.os.clone()),
            ("BUILDOSVERSION".into(), String::new()),
            ("BUILDARCH".into(), build.architecture.clone()),
            (
                "BUILDVARIANT".into(),
                build.variant.clone().unwrap_or_default(),
            ),
            ("TARGETPLATFORM".into(), target.to_string()),
            ("TARGETOS".into(), target.os.clone()),
            ("TARGETOSVERSION".into(), String::new()),
            ("TARGETARCH".into(), target.architecture.clone()),
            (
                "TARGETVARIANT".into(),
                target.variant.clone().unwrap_or_default(),
            ),
            ("TARGETSTAGE".into(), stage.to_string()),
        ]
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn is_known_os(s: &str) -> bool {
    matches!(
        s,
        "linux"
            | "windows"
            | "darwin"
            | "freebsd"
            | "netbsd"
            | "openbsd"
            | "solaris"
            | "illumos"
            | "android"
            | "aix"
            | "dragonfly"
            | "plan9"
            | "js"
            | "wasip1"
    )
}

fn is_known_arch(s: &str) -> bool {
    matches!(
        s,
        "amd64"
            | "x86_64"
            | "x86-64"
            | "arm64"
            | "aarch64"
            | "arm"
            | "armhf"
            | "armel"
            | "386"
            | "i386"
            | "x86"
            | "ppc64le"
            | "s390x"
            | "riscv64"
            | "mips64le"
            | "loong64"
            | "loongarch64"
            | "wasm"
    )
}

/// Normalises an architecture and variant the way containerd's `platforms.Normalize` does
/// for the common cases; `arm64`'s default `v8` variant is dropped.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let variant = variant.map(str::to_ascii_lowercase);
    let (a, v): (&str, Option<String>) = match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64", variant.filter(|v| v != "v1")),
        "aarch64" | "arm64" => ("arm64", variant.filter(|v| v != "v8" && v != "8")),
        "armhf" => ("arm", Some("v7".into())),
        "armel" => ("arm", Some("v6".into())),
        "arm" => (
            "arm",
            Some(match variant.as_deref() {
                None | Some("7") | Some("v7") => "v7".into(),
                Some("5") | Some("v5") => "v5".into(),
                Some("6") | Some("v6") => "v6".into(),
                Some("8") | Some("v8") => "v8".into(),
                Some(other) => other.to_string(),
            }),
        ),
        "i386" | "x86" | "386" => ("386", variant),
        "loongarch64" => ("loong64", variant),
        other => (other, variant),
    };
    (a.to_string(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_common_platforms() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("Linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/arm/v6").unwrap().variant.as_deref(),
            Some("v6")
        );
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("nosuch").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn automatic_args_follow_buildkit_names() {
        let b = Platform::parse("linux/amd64").unwrap();
        let t = Platform::parse("linux/arm/v7").unwrap();
        let args = Platform::automatic_args(&b, &t, "");
        let get = |k: &str| args.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BUILDPLATFORM"), Some("linux/amd64"));
        assert_eq!(get("TARGETPLATFORM"), Some("linux/arm/v7"));
        assert_eq!(get("TARGETARCH"), Some("arm"));
        assert_eq!(get("TARGETVARIANT"), Some("v7"));
        assert_eq!(get("BUILDVARIANT"), Some(""));
        assert_eq!(get("TARGETSTAGE"), Some("default"));
        assert_eq!(args.len(), 11);
    }

    #[test]
    fn host_platform_is_oci_named() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.architecture.contains('_'));
    }
}
