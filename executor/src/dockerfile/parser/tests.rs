//! Parser behaviours beyond BuildKit's data-driven cases: heredocs, directives, warnings,
//! errors with their positions, and robustness on arbitrary input.

use super::*;
use crate::dockerfile::dump::dump_node;

fn doc(text: &str) -> Document {
    match parse("Dockerfile", text.as_bytes()) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

fn err(text: &str) -> DockerfileError {
    match parse("Dockerfile", text.as_bytes()) {
        Ok(d) => panic!("expected an error, got {:?}", d.nodes),
        Err(e) => e,
    }
}

#[test]
fn heredoc_bodies_are_attached_in_order() {
    let d = doc(
        "FROM busybox\nCOPY <<FILE1 <<FILE2 /dest\nhello\nFILE2\nFILE1\nworld\nFILE2\nRUN true\n",
    );
    let copy = &d.nodes[1];
    assert_eq!(copy.heredocs.len(), 2);
    assert_eq!(copy.heredocs[0].name, "FILE1");
    assert_eq!(copy.heredocs[0].content, "hello\nFILE2\n");
    assert_eq!(copy.heredocs[1].content, "world\n");
    assert_eq!((copy.start.line, copy.end_line), (2, 7));
    assert_eq!(copy.args, ["<<FILE1", "<<FILE2", "/dest"]);
    assert_eq!(d.nodes[2].start.line, 8);
}

#[test]
fn heredoc_chomp_quoting_and_comments() {
    let d = doc("FROM x\nRUN <<-'EOT' sh\n\t# kept\n\techo $HOME\n\tEOT\n");
    let h = &d.nodes[1].heredocs[0];
    assert!(h.chomp && !h.expand);
    assert_eq!(h.content, "\t# kept\n\techo $HOME\n");
    assert_eq!(h.chomped(), "# kept\necho $HOME\n");
    let d = doc("FROM x\nONBUILD RUN <<EOF\necho hi\nEOF\n");
    assert_eq!(d.nodes[1].heredocs.len(), 1);
    // JSON form and other instructions never take heredocs.
    let d = doc("FROM x\nRUN [\"<<EOF\"]\nUSER <<INVALID\n");
    assert!(d.nodes[1].heredocs.is_empty() && d.nodes[2].heredocs.is_empty());
}

#[test]
fn unterminated_heredoc() {
    let e = err("FROM x\nRUN <<EOF\necho\n");
    assert_eq!(e.message, "unterminated heredoc");
    assert_eq!(e.position.line, 2);
}

#[test]
fn directives_set_escape_and_end_at_first_other_line() {
    let d = doc("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\nRUN a `\n  b\n");
    assert_eq!(d.escape, '`');
    assert_eq!(d.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(d.nodes[1].args, ["a   b"]);
    let d = doc("# comment\n# escape=`\nFROM x\nRUN a \\\n b\n");
    assert_eq!(d.escape, '\\');
    assert_eq!(d.nodes[1].args, ["a  b"]);
    let e = err("# escape=\\\n# escape=`\nFROM x\n");
    assert_eq!(e.message, "only one escape parser directive can be used");
    let e = err("# escape=x\nFROM x\n");
    assert!(e.message.starts_with("invalid escape token 'x'"));
}

#[test]
fn empty_continuation_lines_warn() {
    let d = doc("FROM x\nRUN echo \\\n\n  hello\n");
    assert_eq!(d.nodes[1].args, ["echo   hello"]);
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(
        d.warnings[0].message,
        "Empty continuation line found in: RUN echo   hello"
    );
    let d = doc("FROM x\nRUN echo \\\n# comment\n  hello\n");
    assert!(d.warnings.is_empty());
}

#[test]
fn positions_of_keywords_and_flags() {
    let d = doc("FROM x\n  COPY --from=a \\\n    --chown=1 a b\n");
    let n = &d.nodes[1];
    assert_eq!(n.start, Position::new(2, 3));
    assert_eq!(n.flag_positions, [Position::new(2, 8), Position::new(3, 5)]);
    assert_eq!(n.flags, ["--from=a", "--chown=1"]);
    assert_eq!(n.end_line, 3);
}

#[test]
fn errors_and_limits() {
    assert_eq!(err("").message, "file with no instructions");
    assert_eq!(
        err("# only\n\n# comments\n").message,
        "file with no instructions"
    );
    assert_eq!(
        err("FROM x\nENV PATH\n").message,
        "ENV must have two arguments"
    );
    assert_eq!(err("FROM x\nENV PATH\n").position, Position::new(2, 1));
    let long = format!("FROM x\nRUN {}\n", "a".repeat(65536));
    assert_eq!(
        err(&long).message,
        "dockerfile line greater than max allowed size of 65535"
    );
    assert_eq!(
        err("FROM x\nCMD [ \"echo\", [ \"nested json\" ] ]\n").message,
        "when using JSON array syntax, arrays must be comprised of strings only"
    );
    let e = err("FROM x\nCMD [1]\n");
    assert!(e.to_string().starts_with("Dockerfile:2:1: when using JSON"));
}

#[test]
fn onbuild_wraps_a_child_and_unknown_keywords_pass() {
    let d = doc("FROM x\nONBUILD RUN --mount=type=cache,target=/c echo test\nFOO bar\n");
    assert_eq!(
        dump_node(&d.nodes[1]),
        "onbuild (run [\"--mount=type=cache,target=/c\"] \"echo test\")"
    );
    let child = d.nodes[1]
        .child
        .as_deref()
        .map(|c| c.flag_positions.clone());
    assert_eq!(child, Some(vec![Position::new(2, 13)]));
    assert_eq!(dump_node(&d.nodes[2]), "foo \"\"");
    assert_eq!(d.nodes[2].keyword_as_written, "FOO");
}

#[test]
fn bom_crlf_and_comments_before_instructions() {
    let d = doc("\u{feff}# hello\r\n# world\r\nFROM x\r\nRUN a\r\n");
    assert_eq!(d.nodes[0].prev_comments, ["hello", "world"]);
    assert_eq!(d.nodes[1].args, ["a"]);
    assert_eq!((d.start_line, d.end_line), (3, 4));
}

proptest::proptest! {
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let _ = crate::fuzz::timed("parse", || parse("Dockerfile", &bytes));
    }

    #[test]
    fn never_panics_on_dockerfile_like_text(s in "((FROM|RUN|COPY|ENV|ARG|ONBUILD|HEALTHCHECK|LABEL|#|--[a-z]+=?|<<-?'?EOF'?|EOF|\\[\"a\"\\]|\\\\|`|\"|'|=| |\t|\n|[a-z$]+){0,40})") {
        let _ = crate::fuzz::timed("parse", || parse("Dockerfile", s.as_bytes()));
    }

    /// Directives, line continuations, many heredocs on one line, escape characters:
    /// the parser's stateful parts, in any order.
    #[test]
    fn never_panics_or_hangs_on_directives_continuations_and_heredocs(
        s in "((# ?(escape|syntax|check)=[`\\\\a-z:/]{0,6}\n)|RUN |COPY |<<-?[\"']?(EOF|X)[\"']? |EOF\n|X\n|\\\\\n|`\n|\t|[a-z=$ ]{0,8}|\r?\n){0,60}"
    ) {
        let _ = crate::fuzz::timed("parse", || parse("Dockerfile", s.as_bytes()));
    }
}

#[test]
fn syntax_directive_must_name_the_dockerfile_1_frontend() {
    for ok in [
        "# syntax=docker/dockerfile:1\nFROM x\n",
        "#syntax = docker.io/docker/dockerfile:1.7-labs\nFROM x\n",
        "# escape=`\n# syntax=docker/dockerfile:labs opt=1\nFROM x\n",
    ] {
        doc(ok);
    }
    let e = err("# syntax=example.com/frontend:2\nFROM x\nFNTRYPOINT y\n");
    assert_eq!(e.position, Position::new(1, 1));
    assert!(
        e.message
            .starts_with("kiln cannot run external frontends: \"example.com/frontend:2\""),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("    1 | # syntax=example.com/frontend:2\n"),
        "{e}"
    );
    // Found where BuildKit looks for it: after a shebang line, in `//` form.
    assert_eq!(err("#!/bin/x\n# syntax=a/b\nFROM x\n").position.line, 2);
    assert_eq!(err("//syntax=a/b\nFROM x\n").position.line, 1);
    // A syntax line after the directive block is a comment.
    doc("FROM x\n# syntax=a/b\n");
}

#[test]
fn check_directive_is_read_and_malformed_values_refused() {
    doc("# check=skip=JSONArgsRecommended,NoSuchRule;error=true\nFROM x\n");
    doc("# check=skip=all\nFROM x\n");
    let e = err("# syntax=docker/dockerfile:1\n# check=error=yes\nFROM x\n");
    assert_eq!(e.position, Position::new(2, 1));
    assert!(
        e.message.starts_with("failed to parse check options: "),
        "{e}"
    );
    let e = err("# check=skip\nFROM x\n");
    assert_eq!(
        e.message,
        "failed to parse check options: invalid check option \"skip\""
    );
}
