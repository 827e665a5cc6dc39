//! Build checks kiln runs while it builds, with BuildKit's rule names and wording, and
//! honouring the Dockerfile's `# check=` directive (`skip=<rules>|all`, `error=true`).
//!
//! - `SecretsUsedInArgOrEnv` (BuildKit's rule): an ARG or ENV key of a stage the target
//!   needs names a secret (a `_`-separated word `apikey`, `auth`, `credential(s)`,
//!   `key`, `password`, `pword`, `passwd`, `secret` or `token`, unless another word is
//!   `public`, `file` or `version`).
//! - kiln adds to that rule what BuildKit cannot see: the *value* of a `--secret` given
//!   to the build also passed as a `--build-arg` value or written in the Dockerfile
//!   (build args land in the image's history; the Dockerfile in every copy of it).

use std::collections::BTreeSet;

use crate::dockerfile::ast::Document;
use crate::dockerfile::dump::go_quote;
use crate::dockerfile::instructions::Instruction;
use crate::dockerfile::parser::directive_values::{parse_check_options, CheckOptions};
use crate::mounts::redact::Redactor;
use crate::plan::StageGraph;

/// BuildKit's name for the rule.
pub const SECRETS_USED_IN_ARG_OR_ENV: &str = "SecretsUsedInArgOrEnv";

/// The checks of one build: which run, and which found something.
#[derive(Debug, Default)]
pub struct Lint {
    options: CheckOptions,
    called: BTreeSet<&'static str>,
    warnings: Vec<String>,
}

impl Lint {
    /// Checks configured by `doc`'s `# check=` directive (already validated by the parser).
    pub fn for_document(doc: &Document) -> Lint {
        let options = doc
            .directives
            .check
            .as_deref()
            .and_then(|v| parse_check_options(v).ok())
            .unwrap_or_default();
        Lint {
            options,
            ..Default::default()
        }
    }

    fn enabled(&self, rule: &str) -> bool {
        !self.options.skip_all && !self.options.skip.iter().any(|s| s == rule)
    }

    /// BuildKit's `LintFormatShort`: `RULE: message (line N)`.
    fn report(&mut self, rule: &'static str, message: String, line: usize) {
        if !self.enabled(rule) {
            return;
        }
        self.called.insert(rule);
        self.warnings.push(if line > 0 {
            format!("{rule}: {message} (line {line})")
        } else {
            format!("{rule}: {message}")
        });
    }

    /// `SecretsUsedInArgOrEnv` on the stages the target needs, in file order.
    pub fn secrets_in_arg_or_env(&mut self, plan: &StageGraph) {
        for stage in plan.stages.iter().filter(|s| s.needed) {
            for c in &stage.stage.commands {
                let (keyword, keys): (&str, Vec<&str>) = match &c.instruction {
                    Instruction::Arg(a) => ("ARG", a.args.iter().map(|d| d.key.as_str()).collect()),
                    Instruction::Env(kv) => ("ENV", kv.iter().map(|k| k.key.as_str()).collect()),
                    _ => continue,
                };
                for key in keys.into_iter().filter(|k| is_secret_key(k)) {
                    self.report(
                        SECRETS_USED_IN_ARG_OR_ENV,
                        secrets_message(keyword, &go_quote(key)),
                        c.position.line,
                    );
                }
            }
        }
    }

    /// kiln's addition to `SecretsUsedInArgOrEnv`: a secret's value given as a build arg
    /// value or written in the Dockerfile. The warning names the secret, never its value.
    pub fn secret_values_elsewhere<'a>(
        &mut self,
        secrets: &[(String, Vec<u8>)],
        build_args: impl IntoIterator<Item = (&'a String, &'a String)> + Clone,
        dockerfile: &[u8],
    ) {
        for (id, value) in secrets {
            let r = Redactor::new([value.as_slice()]);
            if r.is_empty() {
                continue;
            }
            for (k, v) in build_args.clone() {
                if r.finds(v.as_bytes()) {
                    self.report(
                        SECRETS_USED_IN_ARG_OR_ENV,
                        secrets_message(
                            "--build-arg",
                            &format!("{} holds secret {}", go_quote(k), go_quote(id)),
                        ),
                        0,
                    );
                }
            }
            if let Some(n) = dockerfile
                .split(|&b| b == b'\n')
                .position(|line| r.finds(line))
            {
                self.report(
                    SECRETS_USED_IN_ARG_OR_ENV,
                    format!("the Dockerfile holds the value of secret {}", go_quote(id)),
                    n + 1,
                );
            }
        }
    }

    /// The warnings found, in order (each once).
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        std::mem::take(&mut self.warnings)
            .into_iter()
            .filter(|w| seen.insert(w.clone()))
            .collect()
    }

    /// With `# check=error=true`, the rules that found something (BuildKit's
    /// `lint violation found for rules: …`).
    pub fn violations(&self) -> Option<Vec<String>> {
        (self.options.error_on_warning && !self.called.is_empty())
            .then(|| self.called.iter().map(|r| r.to_string()).collect())
    }
}

/// BuildKit's `RuleSecretsUsedInArgOrEnv.Format`.
fn secrets_message(instruction: &str, what: &str) -> String {
    format!("Do not use ARG or ENV instructions for sensitive data ({instruction} {what})")
}

/// BuildKit's secret-key test: a `_`-separated word of `key` (case-insensitive) is a
/// secret token and none is an allowed one.
pub fn is_secret_key(key: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    let words = || key.split('_');
    let any = |list: &[&str]| words().any(|w| list.iter().any(|t| w.eq_ignore_ascii_case(t)));
    any(DENY) && !any(ALLOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_as_buildkit_sees_them() {
        for k in [
            "api_key",
            "DATABASE_PASSWORD",
            "GITHUB_TOKEN",
            "secret_MESSAGE",
            "AUTH",
            "AWS_SECRET_ACCESS_KEY",
            "x__key",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "PUBLIC_KEY",
            "KEY_FILE",
            "TOKEN_VERSION",
            "keyboard",
            "monkey",
            "AUTHOR",
            "PATH",
            "",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
