//! RUN: the step's command in the sandbox, on the stage's snapshot, with its mounts
//! (secrets, ssh agents, caches, binds, tmpfs); a non-zero exit fails the build with the
//! command, its exit code and the end of its output.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{shell_argv, SourceTree, StepContext};
use crate::dockerfile::instructions::{NetworkMode, SecurityMode};
use crate::error::{BuildError, RunFailure, StepError};
use crate::event::Event;
use crate::graph::{RunOp, RunScript, Step};
use crate::image::history;
use crate::image::state::StageState;
use crate::mounts::{MountError, MountInputs};
use crate::plan::scope::{StageScope, DEFAULT_PATH};
use crate::sandbox::mounts::{MountSource, MountSpec};
use crate::sandbox::run::RunSpec;

pub(super) fn run(
    cx: &StepContext<'_>,
    st: &mut StageState,
    step: &Step,
    op: &RunOp,
    id: usize,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Option<String>, BuildError> {
    let pos = step.position;
    let run = &op.run;
    // The step's network: its own --network, else the build's.
    let network = match run.network {
        NetworkMode::Default => cx.opts.network,
        n => n,
    };
    // Entitlements, checked before anything of the step runs (BuildKit's words).
    if run.network == NetworkMode::Host && !cx.opts.allow.network_host {
        return Err(cx.fail(
            pos,
            StepError::Refused("network.host is not allowed".into()),
        ));
    }
    let privileged = run.security == SecurityMode::Insecure;
    if privileged && !cx.opts.allow.security_insecure {
        return Err(cx.fail(
            pos,
            StepError::Refused("security.insecure is not allowed".into()),
        ));
    }
    let mut argv = shell_argv(&st.config, &run.command);
    let mut extra_mounts = Vec::new();
    match &op.script {
        RunScript::AsWritten => {}
        RunScript::Shell(text) => {
            argv.pop();
            argv.push(text.clone());
        }
        RunScript::File { name, content } => {
            let file = cx.scratch.join(format!("heredoc-{id}"));
            std::fs::write(&file, content).map_err(|e| cx.fail(pos, e))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| cx.fail(pos, e))?;
            let target = format!("/dev/pipes/{name}");
            extra_mounts.push(MountSpec {
                target: target.clone(),
                source: MountSource::Bind {
                    source: file,
                    readonly: true,
                    discard_writes: false,
                },
            });
            argv = vec![target];
        }
    }
    let history_text = history::run(&shell_argv(&st.config, &run.command), &st.build_args);

    cx.materialize(st).map_err(|e| cx.fail(pos, e))?;
    let active = cx
        .snapshots
        .prepare(st.chain.as_ref())
        .map_err(|e| cx.fail(pos, e))?;
    // Trees of other stages and contexts for `from=` mounts, kept for the step.
    let mut views: BTreeMap<String, SourceTree> = BTreeMap::new();
    for (name, input) in &op.mount_sources {
        views.insert(
            name.clone(),
            cx.view_of(input).map_err(|e| cx.fail(pos, e))?,
        );
    }
    let from_dir = |f: &str| -> Result<PathBuf, MountError> {
        views
            .get(f)
            .map(|v| v.root().to_path_buf())
            .ok_or_else(|| MountError::BadSource {
                path: f.to_string(),
                target: String::new(),
                why: "unknown stage".into(),
            })
    };
    let workdir = st.config.config.working_dir.clone();
    let workdir = if workdir.is_empty() {
        "/".to_string()
    } else {
        workdir
    };
    let cache_root = cx.opts.root.join("cache").join("mounts");
    let inputs = MountInputs {
        secrets: &cx.secrets,
        ssh: &cx.ssh,
        cache_root: &cache_root,
        context_dir: &cx.opts.context,
        from_dir: &from_dir,
        scratch: &cx.scratch,
        workdir: &workdir,
    };
    let prepared = crate::mounts::prepare(&run.mounts, &inputs).map_err(|e| cx.fail(pos, e))?;
    let mut env: Vec<String> = StageScope::run_env(&step.env, &cx.opts.build_args)
        .into_iter()
        .chain(prepared.env.iter().cloned())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let mut mounts = prepared.specs.clone();
    mounts.extend(extra_mounts);
    let spec = RunSpec {
        rootfs: active.root().to_path_buf(),
        argv: argv.clone(),
        env,
        cwd: workdir.clone(),
        hostname: "buildkitsandbox".into(),
        isolated_network: network == NetworkMode::None,
        user: Some(st.config.config.user.clone()).filter(|u| !u.is_empty()),
        mapping: cx.opts.mapping.clone(),
        mounts,
        secret_env: prepared.secret_env.clone(),
        interactive: false,
        // Made in the build's scratch directory, removed with it.
        etc_dir: cx.scratch.clone(),
        extra_hosts: cx.opts.add_hosts.clone(),
        privileged,
    };
    let outcome = crate::sandbox::run::run(&spec, &cx.opts.helper, Some(&cx.cancel), |chunk| {
        on_event(Event::Output {
            id,
            bytes: chunk.to_vec(),
        })
    })
    .map_err(|e| cx.fail(pos, e))?;
    drop(prepared);
    drop(views);
    if outcome.cancelled {
        return Err(BuildError::Cancelled);
    }
    if outcome.exit_code != 0 {
        return Err(BuildError::RunFailed(Box::new(RunFailure {
            at: cx.source.error(
                pos,
                format!("RUN failed with exit code {}", outcome.exit_code),
            ),
            command: argv.join(" "),
            exit_code: outcome.exit_code,
            output_tail: outcome.output_tail,
        })));
    }
    let digest = cx.commit(st, active).map_err(|e| cx.fail(pos, e))?;
    cx.history(st, history_text, digest.is_some());
    Ok(digest)
}
