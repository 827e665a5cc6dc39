//! The text of a Dockerfile and the errors that point into it.
//!
//! Every error the frontend reports names `FILE:LINE:COL`, shows the offending line and
//! says what was expected. [`Source`] keeps the file's lines so any layer (parser,
//! instructions, plan) can build such an error from a [`Position`].

use std::fmt;
use std::sync::Arc;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub fn new(line: usize, column: usize) -> Self {
        Position { line, column }
    }
}

/// A Dockerfile's name (as the user gave it, e.g. `Dockerfile` or `build/Dockerfile.dev`)
/// and its text, split into lines for code frames.
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    lines: Vec<String>,
}

impl Source {
    /// Wraps raw bytes; invalid UTF-8 is kept lossily for display only (the parser works
    /// on the bytes it is given).
    pub fn new(name: impl Into<String>, bytes: &[u8]) -> Arc<Source> {
        let text = String::from_utf8_lossy(bytes);
        let lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
            .collect();
        Arc::new(Source {
            name: name.into(),
            lines,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text of 1-based line `line`, without its line ending; empty when out of range.
    pub fn line(&self, line: usize) -> &str {
        line.checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .map(String::as_str)
            .unwrap_or("")
    }

    /// An error at `pos` with `message`; the code frame is taken from this source.
    pub fn error(&self, pos: Position, message: impl Into<String>) -> DockerfileError {
        self.error_spanning(pos, pos.line, message)
    }

    /// An error about a whole instruction: it is reported at `start`, and the code frame
    /// shows every line from `start.line` to `end_line` (continuation lines, heredoc
    /// bodies). An `end_line` before `start.line` shows the first line only.
    pub fn error_spanning(
        &self,
        start: Position,
        end_line: usize,
        message: impl Into<String>,
    ) -> DockerfileError {
        let end_line = end_line.max(start.line);
        let lines = if start.line == 0 {
            Vec::new()
        } else {
            (start.line..=end_line)
                .map(|n| self.line(n).to_string())
                .collect()
        };
        DockerfileError {
            file: self.name.clone(),
            position: start,
            end_line,
            message: message.into(),
            lines,
            hint: None,
        }
    }
}

/// A Dockerfile error: where it is, what is wrong, and the line it is on.
///
/// `Display` renders
/// ```text
/// Dockerfile:3:1: unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)
///     3 | FNTRYPOINT ["x"]
///       | ^
/// ```
/// For an instruction over several lines every line is shown, the caret under the first:
/// ```text
/// Dockerfile:3:1: invalid mount target "/"
///     3 | RUN --mount=type=cache \
///       | ^
///     4 |     true
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DockerfileError {
    pub file: String,
    /// Where the error is reported (an instruction's first line and column).
    pub position: Position,
    /// The last line the code frame shows (`position.line` for a one-line frame).
    pub end_line: usize,
    /// What is wrong and what was expected; BuildKit's wording where it has one.
    pub message: String,
    /// The source lines `position.line..=end_line`, for the code frame.
    pub lines: Vec<String>,
    /// An extra suggestion, e.g. `did you mean ENTRYPOINT?`.
    pub hint: Option<String>,
}

impl DockerfileError {
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The message without location or frame, plus the hint if any.
    pub fn summary(&self) -> String {
        match &self.hint {
            Some(h) => format!("{} ({})", self.message, h),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Position { line, column } = self.position;
        writeln!(f, "{}:{}:{}: {}", self.file, line, column, self.summary())?;
        if line == 0 {
            return Ok(());
        }
        let gutter = self.end_line.max(line).to_string().len().max(4);
        let pad = column.saturating_sub(1);
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        writeln!(f, " {line:>gutter$} | {}", untabbed(first))?;
        write!(f, " {:>gutter$} | {:pad$}^", "", "")?;
        for (n, text) in (line + 1..).zip(self.lines.iter().skip(1)) {
            write!(f, "\n {n:>gutter$} | {}", untabbed(text))?;
        }
        Ok(())
    }
}

/// Tabs shown as single spaces, so the caret's column lines up.
fn untabbed(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shows_file_line_column_and_frame() {
        let src = Source::new("Dockerfile", b"FROM busybox\nFNTRYPOINT [\"x\"]\n");
        let err = src
            .error(Position::new(2, 1), "unknown instruction: FNTRYPOINT")
            .with_hint("did you mean ENTRYPOINT?");
        let text = err.to_string();
        assert!(text.starts_with(
            "Dockerfile:2:1: unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)\n"
        ));
        assert!(text.contains("    2 | FNTRYPOINT [\"x\"]\n"));
        assert!(text.ends_with("      | ^"));
    }

    #[test]
    fn spanning_error_shows_every_line_caret_under_the_first() {
        let src = Source::new(
            "Dockerfile",
            b"FROM a\nRUN --mount=type=cache \\\n  x \\\n  y\nRUN z\n",
        );
        let text = src
            .error_spanning(Position::new(2, 1), 4, "invalid mount target \"/\"")
            .to_string();
        assert_eq!(
            text,
            "Dockerfile:2:1: invalid mount target \"/\"\n    \
             2 | RUN --mount=type=cache \\\n      | ^\n    3 |   x \\\n    4 |   y"
        );
        let one = src.error_spanning(Position::new(5, 1), 1, "m").to_string();
        assert!(one.ends_with("    5 | RUN z\n      | ^"), "{one}");
    }

    #[test]
    fn column_moves_the_caret() {
        let src = Source::new("df", b"RUN --mont=x true");
        let text = src
            .error(Position::new(1, 5), "unknown flag: --mont")
            .to_string();
        assert!(text.ends_with("|     ^"), "{text}");
    }
}
