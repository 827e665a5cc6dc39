//! The low-level parse tree: one [`Node`] per instruction, as BuildKit's parser builds it.
//!
//! A node keeps the instruction keyword, its builder flags (`--from=x`), its argument
//! words (already split by the instruction's line parser: JSON array, whitespace words,
//! key/value triples, ...), heredoc bodies, and where it stands in the file. Typed
//! instructions ([`super::instructions`]) are built from nodes.

use std::sync::Arc;

use super::source::{Position, Source};

/// One instruction line (after continuations are joined).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// The instruction keyword in lower case: `from`, `run`, `onbuild`, ... An unknown
    /// word is kept as written (lower-cased); the instructions layer rejects it.
    pub keyword: String,
    /// The keyword exactly as written (`FNTRYPOINT`), for error messages.
    pub keyword_as_written: String,
    /// Builder flags as BuildKit keeps them: `--from=build`, `--link`, quotes removed.
    pub flags: Vec<String>,
    /// Where each flag starts (parallel to `flags`); the instruction start when unknown.
    pub flag_positions: Vec<Position>,
    /// The argument words produced by the instruction's line parser (BuildKit's `Next`
    /// chain). For ENV/LABEL these are `key, value, sep` triples; for shell-form
    /// RUN/CMD/ENTRYPOINT/SHELL one word holding the whole command text.
    pub args: Vec<String>,
    /// ONBUILD's wrapped instruction.
    pub child: Option<Box<Node>>,
    /// True when the arguments came from a JSON array (exec form).
    pub json: bool,
    /// Heredoc bodies attached to this instruction, in the order they appear.
    pub heredocs: Vec<Heredoc>,
    /// The joined instruction text as written (keyword, flags and all), without heredoc
    /// bodies; BuildKit's `Original`, used for history `created_by` strings.
    pub original: String,
    /// Where the keyword starts.
    pub start: Position,
    /// The last line the instruction (including heredoc bodies) occupies.
    pub end_line: usize,
    /// Comment lines directly above the instruction, without the leading `#` and one space.
    pub prev_comments: Vec<String>,
}

impl Node {
    /// The position of flag `i`, or the instruction start.
    pub fn flag_position(&self, i: usize) -> Position {
        self.flag_positions.get(i).copied().unwrap_or(self.start)
    }
}

/// A heredoc attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter with quotes removed (`EOF` for `<<'EOF'`).
    pub name: String,
    /// The file descriptor it feeds (`3<<EOF`), 0 when none is given.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted: the body is taken literally.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from body lines when used.
    pub chomp: bool,
    /// The body, verbatim, each line ending with `\n` (terminator line excluded).
    pub content: String,
}

impl Heredoc {
    /// The body as it is used: with `<<-`, leading tabs removed from every line.
    pub fn chomped(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// Parser directives found at the top of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Directives {
    pub syntax: Option<String>,
    pub escape: Option<char>,
    pub check: Option<String>,
}

/// A non-fatal finding of the parser (e.g. `Empty continuation line found in: ...`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub position: Position,
    pub message: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Document {
    pub source: Arc<Source>,
    pub directives: Directives,
    /// The escape character in force (`\` or `` ` ``).
    pub escape: char,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
    /// First and last line of the instructions (BuildKit's root node span).
    pub start_line: usize,
    pub end_line: usize,
}
