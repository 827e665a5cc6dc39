//! Instruction-level rules from BuildKit's unit tables and integration tests
//! (shared/docs/buildkit-behaviours.md), from Dockerfile text.

use super::*;
use crate::dockerfile::parse;
use crate::dockerfile::shell::Lexer;

fn parsed(text: &str) -> Parsed {
    let doc = match parse("Dockerfile", text.as_bytes()) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    match parse_document(&doc) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn err(text: &str) -> String {
    let doc = match parse("Dockerfile", text.as_bytes()) {
        Ok(d) => d,
        Err(e) => return e.summary(),
    };
    match parse_document(&doc) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e.summary(),
    }
}

fn first(text: &str) -> Instruction {
    let p = parsed(&format!("FROM busybox\n{text}\n"));
    p.stages[0].commands[0].instruction.clone()
}

#[test]
fn argument_counts() {
    for kw in ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"] {
        assert_eq!(
            err(&format!("FROM x\n{kw}\n")),
            format!("{kw} requires exactly one argument")
        );
    }
    for kw in ["ENV", "LABEL", "ONBUILD", "HEALTHCHECK", "EXPOSE", "VOLUME"] {
        assert_eq!(
            err(&format!("FROM x\n{kw}\n")),
            format!("{kw} requires at least one argument")
        );
    }
    for kw in ["ADD", "COPY"] {
        assert_eq!(
            err(&format!("FROM x\n{kw} foo\n")),
            format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined")
        );
        assert_eq!(
            err(&format!("FROM x\n{kw} \\\n  \\\n foo\n")),
            format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined")
        );
    }
}

#[test]
fn env_and_label_rules() {
    assert_eq!(err("FROM x\nENV =x\n"), "ENV names can not be blank");
    assert_eq!(err("FROM x\nLABEL =x\n"), "LABEL names can not be blank");
    assert_eq!(
        first("ENV a=1 b=\"2 3\""),
        Instruction::Env(vec![
            KeyValue {
                key: "a".into(),
                value: "1".into()
            },
            KeyValue {
                key: "b".into(),
                value: "\"2 3\"".into()
            }
        ])
    );
    assert_eq!(
        first("ENV legacy value with spaces"),
        Instruction::Env(vec![KeyValue {
            key: "legacy".into(),
            value: "value with spaces".into()
        }])
    );
}

#[test]
fn unknown_instructions_and_flags() {
    assert_eq!(
        err("FROM x\nFNTRYPOINT [\"a\"]\n"),
        "unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)"
    );
    assert_eq!(
        err("FROM x\nfoo bar\n"),
        "unknown instruction: foo (did you mean from?)"
    );
    assert_eq!(
        err("FROM x\nfrobnicate bar\n"),
        "unknown instruction: frobnicate"
    );
    assert_eq!(err("FROM x\nCOPY --boo=x a b\n"), "unknown flag: --boo");
    assert_eq!(
        err("FROM x\nRUN --mont=type=cache,target=/a true\n"),
        "unknown flag: --mont (did you mean mount?)"
    );
    assert_eq!(
        err("FROM x\nCOPY --from a b\n"),
        "missing a value on flag: --from"
    );
    assert_eq!(
        err("FROM x\nCOPY --link=maybe a b\n"),
        "expecting boolean value for flag --link, not: maybe"
    );
    assert_eq!(err("RUN true\n"), "no build stage in current context");
    let doc = parse("Dockerfile", b"FROM x\nCOPY --link \\\n  --nope=1 a b\n").unwrap();
    let e = parse_document(&doc).unwrap_err();
    assert_eq!((e.position.line, e.position.column), (3, 3));
}

#[test]
fn from_and_stage_names() {
    assert_eq!(
        err("FROM a b\n"),
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a AS b c\n"),
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a AS 1bad\n"),
        "invalid name for build stage: \"1bad\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        err("FROM a AS b$d\n"),
        "invalid name for build stage: \"b$d\", name can't start with a number or contain symbols"
    );
    let p = parsed("ARG V=1\n# build the app\n# Build-Stage compiles things\nFROM --platform=$BUILDPLATFORM golang:$V as Build-Stage\nRUN make\n");
    assert_eq!(p.meta_args.len(), 1);
    let s = &p.stages[0];
    assert_eq!(s.name.as_deref(), Some("build-stage"));
    assert_eq!(s.base, "golang:$V");
    assert_eq!(s.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(s.commands.len(), 1);
    assert_eq!(
        s.doc_comment, None,
        "the comment must start with the lower-cased name"
    );
    let p = parsed("# app the application\nFROM a AS app\n");
    assert_eq!(p.stages[0].doc_comment.as_deref(), Some("the application"));
}

#[test]
fn onbuild_rules() {
    assert_eq!(
        err("FROM x\nONBUILD ONBUILD RUN true\n"),
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        err("FROM x\nONBUILD FROM y\n"),
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err("FROM x\nONBUILD MAINTAINER me\n"),
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    let Instruction::Onbuild(ob) = first("onbuild   COPY --from=assets /a /b") else {
        panic!()
    };
    assert_eq!(ob.expression, "COPY --from=assets /a /b");
    assert!(
        matches!(&ob.trigger.instruction, Instruction::Copy(c) if c.from.as_deref() == Some("assets"))
    );
    let Instruction::Onbuild(ob) = first("ONBUILD RUN <<EOF\necho hi\nEOF") else {
        panic!()
    };
    assert_eq!(ob.expression, "RUN <<EOF\necho hi\nEOF");
}

#[test]
fn copy_and_add() {
    let Instruction::Copy(c) = first("COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=x a b /dst/") else {
        panic!()
    };
    assert_eq!(c.sources, ["a", "b"]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(
        (c.chown.as_deref(), c.chmod.as_deref()),
        (Some("app:app"), Some("0755"))
    );
    assert!(c.link && c.parents);
    assert_eq!(c.excludes, ["*.md", "x"]);
    assert_eq!(
        err("FROM x\nCOPY https://example.com/a /b\n"),
        "source can't be a URL for COPY"
    );
    assert_eq!(
        err("FROM x\nCOPY a <<EOF\nx\nEOF\n"),
        "COPY cannot accept a heredoc as a destination"
    );
    assert_eq!(err("FROM x\nADD --from=x a b\n"), "unknown flag: --from");
    let Instruction::Add(a) = first(
        "ADD --keep-git-dir=false --checksum=sha256:abc --unpack https://example.com/a.tgz /b",
    ) else {
        panic!()
    };
    assert_eq!((a.keep_git_dir, a.unpack), (Some(false), Some(true)));
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    let Instruction::Copy(c) = first("COPY <<-EOF foo.txt /bar\n\tHello ${name}\n\tEOF") else {
        panic!()
    };
    assert_eq!(c.sources, ["foo.txt"]);
    assert_eq!(c.inline_files.len(), 1);
    assert_eq!(c.inline_files[0].name, "EOF");
    assert_eq!(c.inline_files[0].data, "Hello ${name}\n");
    assert!(c.inline_files[0].expand);
}

#[test]
fn run_flags_and_mounts() {
    let Instruction::Run(r) = first("RUN --network=none --security=insecure --mount=type=cache,target=/c --mount=type=secret,id=t,required echo hi") else {
        panic!()
    };
    assert_eq!(
        (r.network, r.security),
        (NetworkMode::None, SecurityMode::Insecure)
    );
    assert_eq!(r.mounts.len(), 2);
    assert_eq!(r.mounts[0].kind, MountKind::Cache);
    assert!(r.mounts[1].required);
    assert_eq!(r.command, ShellOrExec::Shell("echo hi".into()));
    assert_eq!(
        err("FROM x\nRUN --network=bridge true\n"),
        "invalid network mode \"bridge\" (allowed: default, none, host)"
    );
    assert_eq!(
        err("FROM x\nRUN --network=hots true\n"),
        "invalid network mode \"hots\" (did you mean host?)"
    );
    assert_eq!(
        err("FROM x\nRUN --security=x true\n"),
        "security \"x\" is not valid (allowed: sandbox, insecure)"
    );
    assert_eq!(
        err("FROM x\nRUN --security=insecur true\n"),
        "security \"insecur\" is not valid (did you mean insecure?)"
    );
    assert_eq!(
        err("FROM x\nRUN --mount=typ=tmpfs,target=/t true\n"),
        "unexpected key 'typ' in 'typ=tmpfs' (did you mean type?)"
    );
    assert_eq!(
        err("FROM x\nRUN --mount=from=$x,target=/t true\n"),
        "'from' doesn't support variable expansion, define alias stage instead"
    );
    let Instruction::Run(r) =
        first("RUN --device=vendor.com/gpu=all,required --device=name=x true")
    else {
        panic!()
    };
    assert_eq!(
        r.devices,
        vec![
            RunDevice {
                name: "vendor.com/gpu=all".into(),
                required: true
            },
            RunDevice {
                name: "x".into(),
                required: false
            },
        ]
    );
    assert_eq!(
        err("FROM x\nRUN --device=a,b true\n"),
        "invalid field 'b' must be a key=value pair"
    );
    let Instruction::Run(r) = first("RUN [\"echo\", \"a b\"]") else {
        panic!()
    };
    assert_eq!(
        r.command,
        ShellOrExec::Exec(vec!["echo".into(), "a b".into()])
    );
    // A mount with variables is validated when it is expanded.
    let Instruction::Run(r) = first("RUN --mount=type=$T,target=$P true") else {
        panic!()
    };
    assert!(r.mounts[0].needs_expansion);
    let env = vec![
        ("T".to_string(), "tmpfs".to_string()),
        ("P".to_string(), "/x".to_string()),
    ];
    let Ok(Instruction::Run(e)) = Instruction::Run(r.clone()).expand(&Lexer::new('\\'), &env)
    else {
        panic!()
    };
    assert_eq!(
        (e.mounts[0].kind, e.mounts[0].target.as_deref()),
        (MountKind::Tmpfs, Some("/x"))
    );
    let bad = vec![("T".to_string(), "tmp".to_string())];
    let e = Instruction::Run(r)
        .expand(&Lexer::new('\\'), &bad)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported mount type \"tmp\" (did you mean tmpfs?)"
    );
}

#[test]
fn commands_forms() {
    assert_eq!(
        first("CMD echo hi"),
        Instruction::Cmd(ShellOrExec::Shell("echo hi".into()))
    );
    assert_eq!(first("CMD []"), Instruction::Cmd(ShellOrExec::Exec(vec![])));
    assert_eq!(
        first("ENTRYPOINT []random string"),
        Instruction::Entrypoint(ShellOrExec::Shell("[]random string".into()))
    );
    assert_eq!(
        first("SHELL [\"/bin/bash\", \"-c\"]"),
        Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
    assert_eq!(
        err("FROM x\nSHELL /bin/bash -c\n"),
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        first("EXPOSE 80/udp 443"),
        Instruction::Expose(vec!["443".into(), "80/udp".into()])
    );
    assert_eq!(
        err("FROM x\nVOLUME [\"\"]\n"),
        "VOLUME specified can not be an empty string"
    );
    let Instruction::Arg(a) = first("ARG a3 a4=\"123 456\" a1") else {
        panic!()
    };
    let keys: Vec<(&str, Option<&str>)> = a
        .args
        .iter()
        .map(|d| (d.key.as_str(), d.value.as_deref()))
        .collect();
    assert_eq!(
        keys,
        [("a3", None), ("a4", Some("\"123 456\"")), ("a1", None)]
    );
    assert_eq!(err("FROM x\nARG =x\n"), "ARG names can not be blank");
}

#[test]
fn healthcheck_rules() {
    let Instruction::Healthcheck(h) = first("HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=0 --retries=3 CMD curl -f http://localhost/") else {
        panic!()
    };
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(h.interval, Some(Duration::from_secs(30)));
    assert_eq!(h.start_period, Some(Duration::from_secs(60)));
    assert_eq!(h.start_interval, Some(Duration::ZERO));
    assert_eq!(h.retries, Some(3));
    let Instruction::Healthcheck(h) = first("HEALTHCHECK CMD [\"a\", \"b\"]") else {
        panic!()
    };
    assert_eq!(h.test, ["CMD", "a", "b"]);
    let Instruction::Healthcheck(h) = first("HEALTHCHECK none") else {
        panic!()
    };
    assert_eq!(h.test, ["NONE"]);
    assert_eq!(
        err("FROM x\nHEALTHCHECK NONE x\n"),
        "HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        err("FROM x\nHEALTHCHECK --interval=1us CMD x\n"),
        "Interval \"interval\" cannot be less than 1ms"
    );
    assert_eq!(
        err("FROM x\nHEALTHCHECK --retries=-1 CMD x\n"),
        "--retries cannot be negative (-1)"
    );
    assert_eq!(
        err("FROM x\nHEALTHCHECK CONNECT x\n"),
        "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        err("FROM x\nHEALTHCHECK CMD\n"),
        "Missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        err("FROM x\nHEALTHCHECK --bad=1 CMD x\n"),
        "unknown flag: --bad"
    );
}

#[test]
fn expansion_follows_buildkit_per_instruction() {
    let lexer = Lexer::new('\\');
    let env: Vec<(String, String)> = vec![
        ("name".into(), "world".into()),
        ("PORTS".into(), "3000 4000/udp".into()),
        ("D".into(), "/dst".into()),
    ];
    let e = |text: &str| first(text).expand(&lexer, &env).unwrap();
    assert_eq!(
        e("EXPOSE $PORTS"),
        Instruction::Expose(vec!["3000".into(), "4000/udp".into()])
    );
    assert_eq!(e("WORKDIR $D/x"), Instruction::Workdir("/dst/x".into()));
    assert_eq!(
        e("ENV greeting=\"hello $name\""),
        Instruction::Env(vec![KeyValue {
            key: "greeting".into(),
            value: "hello world".into()
        }])
    );
    assert_eq!(
        e("CMD echo $name"),
        Instruction::Cmd(ShellOrExec::Shell("echo $name".into()))
    );
    let Instruction::Copy(c) = e("COPY --chown=$name <<EOF $D\nHello '${name}'! \\$x\nEOF") else {
        panic!()
    };
    assert_eq!(c.dest, "/dst");
    assert_eq!(c.chown.as_deref(), Some("world"));
    assert_eq!(c.inline_files[0].data, "Hello 'world'! $x\n");
    let Instruction::Copy(c) = e("COPY <<'EOF' /a\nHello ${name}\nEOF") else {
        panic!()
    };
    assert_eq!(c.inline_files[0].data, "Hello ${name}\n");
}

#[test]
fn instruction_errors_frame_every_line_of_the_instruction() {
    let doc = parse(
        "Dockerfile",
        b"FROM x\nRUN --mount=type=cache,target=/c \\\n    --network=bridge \\\n    true\nRUN ok\n",
    )
    .unwrap();
    let e = parse_document(&doc).unwrap_err();
    assert_eq!((e.position, e.end_line), (Position::new(2, 1), 4));
    let text = e.to_string();
    assert!(
        text.starts_with("Dockerfile:2:1: invalid network mode \"bridge\""),
        "{text}"
    );
    assert!(
        text.ends_with(
            "    2 | RUN --mount=type=cache,target=/c \\\n      | ^\n    3 |     --network=bridge \\\n    4 |     true"
        ),
        "{text}"
    );
}
