//! Config-only instructions and WORKDIR: what they change in the image config and the
//! history entry BuildKit writes for each.

use super::{owner_in, shell_argv, StepContext};
use crate::context::pattern::clean_abs;
use crate::dockerfile::instructions::Instruction;
use crate::error::StepError;
use crate::graph::{Step, StepGraph};
use crate::image::history::{self, go_list, go_quoted_list};
use crate::image::state::StageState;
use crate::image::Healthcheck;

/// Applies a config-only instruction to `st`.
pub(super) fn apply(
    cx: &StepContext<'_>,
    graph: &StepGraph,
    st: &mut StageState,
    step: &Step,
    instruction: &Instruction,
) -> Result<(), StepError> {
    match instruction {
        Instruction::Env(kvs) => {
            let mut msg = String::from("ENV");
            for kv in kvs {
                st.config.set_env(&kv.key, &kv.value);
                msg.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            cx.history(st, msg, false);
        }
        Instruction::Label(kvs) => {
            let mut msg = String::from("LABEL");
            for kv in kvs {
                st.config
                    .config
                    .labels
                    .insert(kv.key.clone(), kv.value.clone());
                msg.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            cx.history(st, msg, false);
        }
        Instruction::Maintainer(m) => {
            st.config.author = m.clone();
            cx.history(st, format!("MAINTAINER {m}"), false);
        }
        Instruction::Arg(a) => {
            let lexer = crate::dockerfile::shell::Lexer::new(graph.escape);
            let mut parts = Vec::new();
            for d in &a.args {
                let value = match cx.opts.build_args.get(&d.key) {
                    Some(v) => Some(v.clone()),
                    None => match &d.value {
                        Some(raw) => Some(
                            lexer
                                .process_word(raw, &step.env)
                                .map_err(|e| StepError::Refused(e.to_string()))?,
                        ),
                        None => graph
                            .global_args
                            .iter()
                            .find(|(k, _)| *k == d.key)
                            .map(|(_, v)| v.clone()),
                    },
                };
                parts.push(match &value {
                    Some(v) => format!("{}={v}", d.key),
                    None => d.key.clone(),
                });
                let shown = value.unwrap_or_default();
                match st.build_args.iter_mut().find(|(k, _)| *k == d.key) {
                    Some(slot) => slot.1 = shown,
                    None => st.build_args.push((d.key.clone(), shown)),
                }
            }
            cx.history(st, format!("ARG {}", parts.join(" ")), false);
        }
        Instruction::Cmd(form) => {
            let args = shell_argv(&st.config, form);
            st.config.config.cmd = Some(args.clone());
            st.config.config.args_escaped = true;
            st.cmd_set = true;
            cx.history(st, format!("CMD {}", go_quoted_list(&args)), false);
        }
        Instruction::Entrypoint(form) => {
            let args = shell_argv(&st.config, form);
            st.config.config.entrypoint = Some(args.clone());
            // An ENTRYPOINT resets a CMD inherited from the base (not one set here).
            if !st.cmd_set {
                st.config.config.cmd = None;
            }
            cx.history(st, format!("ENTRYPOINT {}", go_quoted_list(&args)), false);
        }
        Instruction::Shell(sh) => {
            st.config.config.shell = sh.clone();
            cx.history(st, format!("SHELL {}", go_list(sh)), false);
        }
        Instruction::Expose(ports) => {
            let mut list = Vec::new();
            for p in ports {
                list.extend(parse_port(p)?);
            }
            for p in &list {
                st.config
                    .config
                    .exposed_ports
                    .insert(p.clone(), serde_json::json!({}));
            }
            cx.history(st, format!("EXPOSE {}", go_list(&list)), false);
        }
        Instruction::Volume(vols) => {
            for v in vols {
                if v.is_empty() {
                    return Err(StepError::Refused(
                        "VOLUME specified can not be an empty string".into(),
                    ));
                }
                st.config
                    .config
                    .volumes
                    .insert(v.clone(), serde_json::json!({}));
            }
            cx.history(st, format!("VOLUME {}", go_list(vols)), false);
        }
        Instruction::User(u) => {
            st.config.config.user = u.clone();
            cx.history(st, format!("USER {u}"), false);
        }
        Instruction::Stopsignal(s) => {
            st.config.config.stop_signal = s.clone();
            cx.history(st, format!("STOPSIGNAL {s}"), false);
        }
        Instruction::Healthcheck(h) => {
            let ns = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as u64);
            let hc = Healthcheck {
                test: h.test.clone(),
                interval: ns(h.interval),
                timeout: ns(h.timeout),
                start_period: ns(h.start_period),
                start_interval: ns(h.start_interval),
                retries: h.retries.unwrap_or(0) as u64,
            };
            let msg = history::healthcheck(&hc);
            st.config.config.healthcheck = Some(hc);
            cx.history(st, msg, false);
        }
        Instruction::Onbuild(ob) => {
            st.config.config.on_build.push(ob.expression.clone());
        }
        // Filesystem instructions are their own step kinds in the graph.
        Instruction::Run(_)
        | Instruction::Copy(_)
        | Instruction::Add(_)
        | Instruction::Workdir(_) => {}
    }
    Ok(())
}

/// `WORKDIR path`: the config's working directory, and the directory made (owned by the
/// current USER) when it is not `/`.
pub(super) fn workdir(
    cx: &StepContext<'_>,
    st: &mut StageState,
    w: &str,
) -> Result<Option<String>, StepError> {
    let wd = workdir_path(st, w);
    st.config.config.working_dir = wd.clone();
    let mut layer = None;
    if wd != "/" {
        let user = st.config.config.user.clone();
        layer = cx.fs_step(st, |root| {
            let owner = owner_in(root, &user)?;
            crate::step::copy::tree::make_dir(root, &wd, owner)?;
            Ok(())
        })?;
    }
    let made = layer.is_some();
    cx.history(st, format!("WORKDIR {wd}"), made);
    Ok(layer)
}

/// `WORKDIR w` made absolute against the stage's current working directory.
pub(super) fn workdir_path(st: &StageState, w: &str) -> String {
    if w.starts_with('/') {
        clean_abs(w)
    } else {
        clean_abs(&format!("{}/{w}", st.config.config.working_dir))
    }
}

/// `EXPOSE` words → `port/proto` entries (ranges expanded, ip/host parts dropped).
fn parse_port(raw: &str) -> Result<Vec<String>, StepError> {
    let (port, proto) = match raw.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (raw, "tcp".to_string()),
    };
    let container = port.rsplit(':').next().unwrap_or(port);
    let bad = || StepError::Refused(format!("invalid containerPort: {container}"));
    let (lo, hi) = match container.split_once('-') {
        Some((a, b)) => (
            a.parse::<u32>().map_err(|_| bad())?,
            b.parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let p = container.parse::<u32>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo || hi > 65535 {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_expand() {
        assert_eq!(parse_port("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(parse_port("8000-8001").unwrap(), ["8000/tcp", "8001/tcp"]);
        assert!(parse_port("x").is_err());
    }
}
