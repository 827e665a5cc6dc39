//! The plan against BuildKit's stage, `--from`, `--target` and global-ARG behaviours
//! (shared/docs/buildkit-behaviours.md), from Dockerfile text.

use std::collections::BTreeMap;

use super::*;
use crate::dockerfile::parse;

fn plan_text(text: &str) -> Result<StageGraph, PlanError> {
    plan_with(text, PlanOptions::default())
}

fn plan_with(text: &str, opts: PlanOptions) -> Result<StageGraph, PlanError> {
    let doc = parse("Dockerfile", text.as_bytes()).map_err(PlanError::from)?;
    plan(&doc, &opts)
}

fn err_text(r: Result<StageGraph, PlanError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(PlanError::Dockerfile(e)) => e.summary(),
        Err(e) => e.to_string(),
    }
}

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn image(g: &StageGraph, i: usize) -> &str {
    match &g.stages[i].base {
        Base::Image(r) => r,
        other => panic!("stage {i} base is {other:?}"),
    }
}

#[test]
fn global_args_expand_in_from_in_file_order() {
    let g = plan_text("ARG a1=box\nARG a2=\"$a1-foo\"\nFROM $a2\n").unwrap();
    assert_eq!(image(&g, 0), "box-foo");
    let g = plan_text("ARG image=idlebox\nFROM busy${image#idle}\n").unwrap();
    assert_eq!(image(&g, 0), "busybox");
    let g = plan_text("ARG a3 a4=\"123 456\" a1\nFROM x:$a4\n").unwrap();
    assert_eq!(image(&g, 0), "x:123 456");
}

#[test]
fn build_args_replace_global_defaults_without_evaluating_them() {
    let df = "ARG FOO=${FOO:?\"custom error\"}\nFROM busybox\n";
    let e = err_text(plan_text(df));
    assert!(e.contains("FOO: custom error"), "{e}");
    let opts = PlanOptions {
        build_args: args(&[("FOO", "bar")]),
        ..PlanOptions::default()
    };
    let g = plan_with(&format!("{df}FROM img:$FOO\n"), opts).unwrap();
    assert_eq!(image(&g, 1), "img:bar");
}

#[test]
fn blank_base_names_are_errors() {
    assert_eq!(
        err_text(plan_text("FROM \"\"\n")),
        "base name (\"\") should not be blank"
    );
    assert_eq!(
        err_text(plan_text("ARG BLANK\nFROM ${BLANK}\n")),
        "base name (${BLANK}) should not be blank"
    );
}

#[test]
fn automatic_platform_args_work_in_from() {
    let opts = PlanOptions {
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target_platform: Some(Platform::parse("linux/arm64").unwrap()),
        ..PlanOptions::default()
    };
    let g = plan_with(
        "FROM --platform=$BUILDPLATFORM busybox AS build-linux\nFROM build-${TARGETOS}\nFROM img:${TARGETARCH}-${BUILDARCH}\n",
        opts,
    )
    .unwrap();
    assert_eq!(
        g.stages[0].platform.as_ref().unwrap().to_string(),
        "linux/amd64"
    );
    assert_eq!(g.stages[1].base, Base::Stage(0));
    assert_eq!(image(&g, 2), "img:arm64-amd64");
    // A build-arg of the same name overrides an automatic ARG.
    let opts = PlanOptions {
        build_args: args(&[("TARGETARCH", "riscv64")]),
        ..PlanOptions::default()
    };
    let g = plan_with("FROM img:${TARGETARCH}\n", opts).unwrap();
    assert_eq!(image(&g, 0), "img:riscv64");
}

#[test]
fn targetstage_is_the_target_or_the_last_stage_or_default() {
    let df = "FROM a:${TARGETSTAGE} AS one\nFROM b:${TARGETSTAGE} AS two\n";
    let g = plan_text(df).unwrap();
    assert_eq!(image(&g, 0), "a:two");
    let opts = PlanOptions {
        target: Some("one".into()),
        ..PlanOptions::default()
    };
    assert_eq!(image(&plan_with(df, opts).unwrap(), 0), "a:one");
    let g = plan_text("FROM a:${TARGETSTAGE}\n").unwrap();
    assert_eq!(image(&g, 0), "a:default");
}

#[test]
fn from_uses_only_earlier_stages_and_exact_names() {
    let g = plan_text("FROM later AS a\nFROM busybox AS later\nFROM later\n").unwrap();
    assert_eq!(image(&g, 0), "later");
    assert_eq!(g.stages[2].base, Base::Stage(1));
    let g = plan_text("FROM busybox AS build\nFROM Build\n").unwrap();
    assert_eq!(image(&g, 1), "Build");
    let g = plan_text("FROM scratch\n").unwrap();
    assert_eq!(g.stages[0].base, Base::Scratch);
}

#[test]
fn copy_from_resolves_index_name_or_image() {
    let g = plan_text(
        "FROM busybox AS STAge0\nFROM golang AS golang\nFROM scratch\nCOPY --from=staGE0 /a /a\nCOPY --from=0 /b /b\nCOPY --from=golang /c /c\nCOPY --from=alpine:3 /d /d\n",
    )
    .unwrap();
    let deps: Vec<&DependencyTarget> = g.stages[2].dependencies.iter().map(|d| &d.target).collect();
    assert_eq!(
        deps,
        [
            &DependencyTarget::Stage(0),
            &DependencyTarget::Stage(0),
            &DependencyTarget::Stage(1),
            &DependencyTarget::Image("alpine:3".into())
        ]
    );
    assert_eq!(g.levels(), vec![vec![0, 1], vec![2]]);
    assert_eq!(
        err_text(plan_text("FROM busybox\nCOPY --from=5 /a /a\n")),
        "invalid stage index 5"
    );
}

#[test]
fn copy_from_does_not_expand_variables() {
    let e = err_text(plan_text(
        "FROM busybox AS a\nARG X=a\nCOPY --from=$X /a /a\n",
    ));
    assert_eq!(
        e,
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    );
}

#[test]
fn forward_references_fail_only_when_built() {
    let df = "FROM busybox AS target\nCOPY --from=build /a /a\nFROM busybox AS build\n";
    let opts = PlanOptions {
        target: Some("target".into()),
        ..PlanOptions::default()
    };
    let e = err_text(plan_with(df, opts));
    assert_eq!(
        e,
        "cannot copy from stage \"build\", it needs to be defined before current stage \"target\""
    );
    // Not an error when the stage is not needed.
    let g = plan_text(df).unwrap();
    assert!(!g.stages[0].needed);
    let e = err_text(plan_text(
        "FROM busybox AS a\nRUN --mount=from=b,target=/m true\nFROM busybox AS b\nFROM a\n",
    ));
    assert_eq!(
        e,
        "cannot mount from stage \"b\" to \"/m\", stage needs to be defined before current command"
    );
}

#[test]
fn cycles_are_errors_with_a_position() {
    let r = plan_text("FROM busybox AS stage0\nCOPY --from=stage0 /a /a\n");
    match r {
        Err(PlanError::Dockerfile(e)) => {
            assert_eq!(e.message, "circular dependency detected on stage: stage0");
            assert_eq!(e.position.line, 2);
        }
        other => panic!("{other:?}"),
    }
    let e = err_text(plan_text(
        "FROM busybox AS a\nCOPY --from=c /x /x\nFROM busybox AS b\nCOPY --from=a /x /x\nFROM busybox AS c\nCOPY --from=b /x /x\n",
    ));
    assert!(
        e.starts_with("circular dependency detected on stage: "),
        "{e}"
    );
}

#[test]
fn target_selects_case_insensitively_and_suggests_on_typos() {
    let df = "FROM busybox AS build\nFROM busybox AS test\nCOPY --from=build /a /a\n";
    let opts = PlanOptions {
        target: Some("BUILD".into()),
        ..PlanOptions::default()
    };
    let g = plan_with(df, opts).unwrap();
    assert_eq!(g.target, 0);
    assert_eq!(g.execution_order(), vec![0]);
    let opts = PlanOptions {
        target: Some("bulid".into()),
        ..PlanOptions::default()
    };
    assert_eq!(
        plan_with(df, opts).unwrap_err().to_string(),
        "target stage \"bulid\" could not be found (did you mean build?)"
    );
    let opts = PlanOptions {
        target: Some("nosuch".into()),
        ..PlanOptions::default()
    };
    assert_eq!(
        plan_with(df, opts).unwrap_err().to_string(),
        "target stage \"nosuch\" could not be found"
    );
}

#[test]
fn only_reachable_stages_are_needed() {
    let g = plan_text(
        "FROM busybox AS a\nRUN false\nFROM busybox AS b\nFROM b AS c\nRUN --mount=type=bind,from=d,target=/d true\nFROM busybox AS d\nFROM c\n",
    );
    // c mounts from d, defined later: an error since c is needed.
    assert!(err_text(g).starts_with("cannot mount from stage \"d\""));
    let g = plan_text(
        "FROM busybox AS a\nRUN false\nFROM busybox AS d\nFROM busybox AS b\nFROM b AS c\nRUN --mount=type=bind,from=d,target=/d true\nFROM c\n",
    )
    .unwrap();
    let needed: Vec<bool> = g.stages.iter().map(|s| s.needed).collect();
    assert_eq!(needed, [false, true, true, true, true]);
    assert_eq!(g.levels(), vec![vec![1, 2], vec![3], vec![4]]);
}

#[test]
fn onbuild_triggers_of_a_base_stage_add_dependencies() {
    let g = plan_text(
        "FROM busybox AS assets\nFROM busybox AS base\nONBUILD COPY --from=assets /a /a\nFROM base\n",
    )
    .unwrap();
    let deps = &g.stages[2].dependencies;
    assert!(deps
        .iter()
        .any(|d| d.kind == DependencyKind::Onbuild && d.target == DependencyTarget::Stage(0)));
    assert!(g.stages[0].needed);
    // The stage that declares the trigger does not run it itself.
    assert!(g.stages[1].stage_dependencies().is_empty());
}

#[test]
fn no_stages_is_an_error() {
    let e = err_text(plan_text("ARG X=1\n"));
    assert_eq!(e, "dockerfile contains no stages to build");
}

mod scoping {
    //! ARG/ENV scoping through whole stages (buildkit-behaviours.md, "ARG scoping").

    use super::*;
    use crate::dockerfile::instructions::{Instruction, ShellOrExec};

    /// The environment of every RUN of the target stage, in order.
    fn run_envs(text: &str, opts: PlanOptions) -> Vec<Vec<(String, String)>> {
        let doc = parse("Dockerfile", text.as_bytes()).unwrap();
        let g = plan(&doc, &opts).unwrap();
        let ev = g.evaluate(&doc.source, &|_| vec![]).unwrap();
        ev[&g.target]
            .commands
            .iter()
            .filter(|c| matches!(c.instruction, Instruction::Run(_)))
            .map(|c| c.env.iter().filter(|(k, _)| k != "PATH").cloned().collect())
            .collect()
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn global_args_need_redeclaration_and_unset_args_are_absent() {
        let envs = run_envs(
            "ARG G=global\nARG H=h\nFROM busybox\nRUN a\nARG G\nARG FOO\nARG BAR=\nRUN b\n",
            PlanOptions::default(),
        );
        assert_eq!(envs[0], kv(&[]));
        assert_eq!(envs[1], kv(&[("G", "global"), ("BAR", "")]));
    }

    #[test]
    fn build_args_only_reach_declared_args_and_proxies() {
        let opts = PlanOptions {
            build_args: args(&[("FOO", "x"), ("UNDECLARED", "y"), ("http_proxy", "p")]),
            ..PlanOptions::default()
        };
        let doc = parse("Dockerfile", b"FROM busybox\nARG FOO=default\nRUN true\n").unwrap();
        let g = plan(&doc, &opts).unwrap();
        let ev = g.evaluate(&doc.source, &|_| vec![]).unwrap();
        let env = StageScope::run_env(&ev[&0].commands[1].env, &g.build_args);
        assert!(env.contains(&("FOO".into(), "x".into())));
        assert!(env.contains(&("http_proxy".into(), "p".into())));
        assert!(!env.iter().any(|(k, _)| k == "UNDECLARED"));
    }

    #[test]
    fn env_shadows_arg_and_defaults_see_earlier_values() {
        let envs = run_envs(
            "FROM busybox\nARG my_arg=a\nARG other=${my_arg}-b\nENV my_arg=env\nARG third=${my_arg:-def}\nRUN x\n",
            PlanOptions::default(),
        );
        assert_eq!(
            envs[0],
            kv(&[("my_arg", "env"), ("other", "a-b"), ("third", "env")])
        );
        let opts = PlanOptions {
            build_args: args(&[("my_arg", "")]),
            ..PlanOptions::default()
        };
        let envs = run_envs(
            "FROM busybox\nARG my_arg\nENV x=${my_arg:-def_val}\nRUN x\n",
            opts,
        );
        assert_eq!(envs[0], kv(&[("my_arg", ""), ("x", "def_val")]));
    }

    #[test]
    fn env_pairs_expand_with_the_previous_scope() {
        let envs = run_envs(
            "FROM busybox\nENV a=1\nENV a=2 b=$a\nRUN x\n",
            PlanOptions::default(),
        );
        assert_eq!(envs[0], kv(&[("a", "2"), ("b", "1")]));
    }

    #[test]
    fn arg_default_errors_carry_the_message() {
        let doc = parse(
            "Dockerfile",
            b"FROM busybox\nARG X=\"${NOPE:?must be set}\"\n",
        )
        .unwrap();
        let g = plan(&doc, &PlanOptions::default()).unwrap();
        let e = g.evaluate(&doc.source, &|_| vec![]).unwrap_err();
        assert!(e.message.ends_with("NOPE: must be set"), "{}", e.message);
        assert_eq!(e.position.line, 2);
    }

    #[test]
    fn child_stage_inherits_args_and_runs_onbuild_triggers_once() {
        let text = "FROM busybox AS base\nARG foo=bar\nENV E=1\nONBUILD RUN echo trigger\nFROM base AS child\nRUN echo $foo\nFROM child\nRUN last\n";
        let doc = parse("Dockerfile", text.as_bytes()).unwrap();
        let g = plan(&doc, &PlanOptions::default()).unwrap();
        let ev = g.evaluate(&doc.source, &|_| vec![]).unwrap();
        let child = &ev[&1].commands;
        assert!(child[0].from_onbuild);
        assert!(
            matches!(&child[0].instruction, Instruction::Run(r) if r.command == ShellOrExec::Shell("echo trigger".into()))
        );
        assert!(child[1].env.contains(&("foo".into(), "bar".into())));
        assert!(child[1].env.contains(&("E".into(), "1".into())));
        // The grandchild does not run base's trigger again.
        assert!(ev[&2].commands.iter().all(|c| !c.from_onbuild));
    }

    #[test]
    fn default_path_only_when_the_image_has_none() {
        let doc = parse("Dockerfile", b"FROM img\nRUN a\nFROM scratch\nRUN b\n").unwrap();
        let g = plan(&doc, &PlanOptions::default()).unwrap();
        let ev = g
            .evaluate(&doc.source, &|_| {
                vec![("PATH".to_string(), "/custom".to_string())]
            })
            .unwrap();
        assert_eq!(ev[&1].end.get("PATH"), Some(scope::DEFAULT_PATH));
        let doc = parse("Dockerfile", b"FROM img\nRUN a\n").unwrap();
        let g = plan(&doc, &PlanOptions::default()).unwrap();
        let ev = g
            .evaluate(&doc.source, &|_| {
                vec![("PATH".to_string(), "/custom".to_string())]
            })
            .unwrap();
        assert_eq!(ev[&0].end.get("PATH"), Some("/custom"));
    }

    #[test]
    fn expose_splits_arg_values_into_ports() {
        let doc = parse(
            "Dockerfile",
            b"FROM busybox\nARG PORTS=\"3000 4000/udp\"\nEXPOSE $PORTS\n",
        )
        .unwrap();
        let g = plan(&doc, &PlanOptions::default()).unwrap();
        let ev = g.evaluate(&doc.source, &|_| vec![]).unwrap();
        assert_eq!(
            ev[&0].commands[1].instruction,
            Instruction::Expose(vec!["3000".into(), "4000/udp".into()])
        );
    }
}

fn evaluated(text: &str) -> Result<BTreeMap<usize, StageEvaluation>, DockerfileError> {
    let doc = parse("Dockerfile", text.as_bytes())?;
    let p = plan(&doc, &PlanOptions::default()).map_err(|e| match e {
        PlanError::Dockerfile(d) => d,
        other => panic!("{other}"),
    })?;
    p.evaluate(&doc.source, &|_| Vec::new())
}

#[test]
fn stopsignal_is_checked_after_expansion_in_needed_stages_only() {
    let e = evaluated("FROM scratch\nARG S=SIGFOO\nSTOPSIGNAL $S\n").unwrap_err();
    assert_eq!(
        (e.position.line, e.summary()),
        (3, "invalid signal: SIGFOO".into())
    );
    let e = evaluated("FROM scratch\nSTOPSIGNAL 0\n").unwrap_err();
    assert_eq!(e.summary(), "invalid signal: 0");
    assert!(evaluated("FROM scratch\nARG S=term\nSTOPSIGNAL sig$S\nSTOPSIGNAL 40\n").is_ok());
    // BuildKit dispatches only the stages the target needs.
    assert!(evaluated("FROM scratch AS unused\nSTOPSIGNAL NOPE\nFROM scratch\n").is_ok());
}

#[test]
fn evaluation_errors_show_the_whole_instruction() {
    let e = evaluated("FROM scratch\nSTOPSIGNAL \\\n  SIGNOPE\n").unwrap_err();
    assert_eq!((e.position.line, e.end_line), (2, 3));
    let text = e.to_string();
    assert!(text.contains("    2 | STOPSIGNAL \\\n"), "{text}");
    assert!(text.ends_with("    3 |   SIGNOPE"), "{text}");
}

#[test]
fn stage_errors_point_at_the_from_line() {
    let doc = parse("Dockerfile", b"ARG B=\nFROM \\\n  $B\nRUN x\n").unwrap();
    let Err(PlanError::Dockerfile(e)) = plan(&doc, &PlanOptions::default()) else {
        panic!("expected an error")
    };
    assert_eq!((e.position.line, e.end_line), (2, 3), "{e}");
    assert_eq!(e.summary(), "base name ($B) should not be blank");
}
