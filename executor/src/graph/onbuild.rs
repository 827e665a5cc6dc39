//! ONBUILD triggers of base images: the config's `OnBuild` expressions parsed as the
//! instructions they are, positioned at the `FROM` that inherits them.

use crate::dockerfile::instructions::{parse_document, Command};
use crate::dockerfile::{DockerfileError, Position, Source};

/// Parses `triggers` (an image's `OnBuild` list) for the stage at `from` built on
/// `reference`.
pub fn parse_triggers(
    triggers: &[String],
    reference: &str,
    from: Position,
    source: &Source,
) -> Result<Vec<Command>, DockerfileError> {
    let mut out = Vec::new();
    for t in triggers {
        let text = format!("FROM scratch\n{t}\n");
        let parsed = crate::dockerfile::parser::parse("ONBUILD", text.as_bytes())
            .and_then(|d| parse_document(&d))
            .map_err(|e| {
                source.error(
                    from,
                    format!("ONBUILD trigger {t:?} of {reference}: {}", e.summary()),
                )
            })?;
        for mut c in parsed.stages.into_iter().flat_map(|s| s.commands) {
            c.position = from;
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_parse_at_the_from_line() {
        let src = Source::new("Dockerfile", b"FROM base\n");
        let pos = Position { line: 1, column: 1 };
        let cmds =
            parse_triggers(&["RUN echo hi".into(), "ENV A=b".into()], "base", pos, &src).unwrap();
        assert_eq!(cmds.len(), 2);
        assert!(cmds.iter().all(|c| c.position == pos));
        let e = parse_triggers(&["NOPE x".into()], "base", pos, &src).unwrap_err();
        assert!(e.to_string().contains("ONBUILD trigger"), "{e}");
    }
}
