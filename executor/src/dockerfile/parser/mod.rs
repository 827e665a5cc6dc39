//! The Dockerfile parser: bytes → [`Document`], exactly as BuildKit's parser reads them.
//!
//! - A UTF-8 BOM on the first line is dropped; lines end at `\n` (a trailing `\r` goes).
//!   Invalid UTF-8 is read lossily (each bad sequence becomes U+FFFD).
//! - Parser directives (`directives`) are recognised in the leading block only. A
//!   `syntax` naming another frontend than Dockerfile 1.x, or a malformed `check`, is an
//!   error at its line (`directive_values`); the syntax is looked at before anything else,
//!   as BuildKit picks the frontend before the file is parsed.
//! - A line whose first non-blank character is `#` is a comment, also inside a
//!   continuation. A line continues when it ends with the escape character (not doubled)
//!   plus optional spaces/tabs; the next line is appended with no separator and keeps its
//!   leading whitespace; blank lines inside a continuation are skipped with a warning.
//! - The joined line splits into keyword and rest; builder flags (`flags`) come off the
//!   front of the rest, and the instruction's line parser (`line_parsers`) makes the
//!   argument words. ONBUILD's rest is parsed as a nested instruction.
//! - RUN, COPY and ADD (also under ONBUILD) may name heredocs (`heredoc`); their bodies
//!   are the following lines up to each terminator.

pub mod directive_values;
mod directives;
mod flags;
mod heredoc;
mod line_parsers;
mod parse_error;

use std::sync::Arc;

pub use directives::{detect_syntax, SyntaxDirective};
pub use heredoc::parse_heredoc_word;
pub use parse_error::ParseError;

use super::ast::{Directives, Document, Node, Warning};
use super::source::{DockerfileError, Position, Source};
use directives::{DirectiveLine, DirectiveScanner};

/// The longest line BuildKit's scanner accepts, in bytes (without the newline).
const MAX_LINE: usize = 65535;

/// Where a run of characters of the joined instruction line came from.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Char index in the joined line where the segment starts.
    start: usize,
    line: usize,
    /// 1-based column of that first char in its source line.
    column: usize,
}

/// A joined instruction line and the map back to source positions.
struct Joined {
    text: String,
    chars: usize,
    segments: Vec<Segment>,
}

impl Joined {
    fn new() -> Self {
        Joined {
            text: String::new(),
            chars: 0,
            segments: Vec::new(),
        }
    }

    fn push(&mut self, s: &str, line: usize, column: usize) {
        self.segments.push(Segment {
            start: self.chars,
            line,
            column,
        });
        self.text.push_str(s);
        self.chars += s.chars().count();
    }

    fn position(&self, index: usize) -> Position {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.start <= index)
            .or(self.segments.first());
        match seg {
            Some(s) => Position::new(s.line, s.column + index - s.start.min(index)),
            None => Position::new(1, 1),
        }
    }
}

/// Parses a Dockerfile named `name` (used in error messages) from its raw bytes.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Document, DockerfileError> {
    let source = Source::new(name, bytes);
    if let Some(syntax) = detect_syntax(bytes) {
        directive_values::check_syntax_reference(&syntax.reference)
            .map_err(|e| source.error(Position::new(syntax.line.max(1), 1), e.to_string()))?;
    }
    Parser::new(source, bytes).run()
}

struct Parser {
    source: Arc<Source>,
    /// The file's lines, newline removed (a trailing `\r` is kept here and trimmed where
    /// BuildKit trims it), BOM removed from the first.
    lines: Vec<String>,
    next: usize,
    escape: char,
    directive_scanner: DirectiveScanner,
    directives: Directives,
    /// Whether the last line ended with `\n` (every other line did).
    trailing_newline: bool,
}

impl Parser {
    fn new(source: Arc<Source>, bytes: &[u8]) -> Self {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut lines: Vec<String> = bytes
            .split(|b| *b == b'\n')
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let trailing_newline = bytes.ends_with(b"\n");
        if trailing_newline || bytes.is_empty() {
            lines.pop();
        }
        Parser {
            source,
            lines,
            next: 0,
            escape: '\\',
            directive_scanner: DirectiveScanner::default(),
            directives: Directives::default(),
            trailing_newline,
        }
    }

    fn error(&self, line: usize, column: usize, msg: impl Into<String>) -> DockerfileError {
        self.source.error(Position::new(line, column), msg)
    }

    /// Reads the next line: (1-based number, text without `\n`).
    fn read_line(&mut self) -> Result<Option<(usize, String)>, DockerfileError> {
        let Some(text) = self.lines.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        if text.len() > MAX_LINE {
            return Err(self.error(
                self.next,
                1,
                format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
            ));
        }
        Ok(Some((self.next, text.clone())))
    }

    /// Offers a line (newline trimmed) to the directive scanner.
    fn directive(&mut self, line_no: usize, token: &str) -> Result<bool, DockerfileError> {
        match self.directive_scanner.scan(token) {
            Err(e) => Err(self.error(line_no, 1, e.to_string())),
            Ok(DirectiveLine::NotDirective) => Ok(false),
            Ok(DirectiveLine::Directive { key, value }) => {
                match key {
                    "escape" => {
                        let mut it = value.chars();
                        match (it.next(), it.next()) {
                            (Some(c @ ('\\' | '`')), None) => {
                                self.escape = c;
                                self.directives.escape = Some(c);
                            }
                            _ => {
                                return Err(self.error(
                                    line_no,
                                    1,
                                    format!(
                                        "invalid escape token '{value}' does not match ` or \\"
                                    ),
                                ))
                            }
                        }
                    }
                    "syntax" => self.directives.syntax = Some(value),
                    _ => {
                        directive_values::parse_check_options(&value)
                            .map_err(|e| self.error(line_no, 1, e.to_string()))?;
                        self.directives.check = Some(value);
                    }
                }
                Ok(true)
            }
        }
    }

    /// Removes a line continuation: (text without it, whether the line ends here).
    fn trim_continuation<'a>(&self, token: &'a str) -> (&'a str, bool) {
        let trimmed = token.trim_end_matches([' ', '\t']);
        let Some(body) = trimmed.strip_suffix(self.escape) else {
            return (token, true);
        };
        match body.chars().last() {
            None => ("", false),
            Some(c) if c == self.escape => (token, true),
            Some(_) => (body, false),
        }
    }

    fn run(mut self) -> Result<Document, DockerfileError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        while let Some((line_no, raw)) = self.read_line()? {
            if is_comment(&raw) {
                let comment = raw.get(1..).unwrap_or("").trim().to_string();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment);
                }
            }
            let token = trim_newline(&raw);
            let stripped = token.trim_start();
            let lead = token.chars().count() - stripped.chars().count();
            if self.directive(line_no, stripped)? {
                comments.pop();
            }
            let token = if is_comment(stripped) { "" } else { stripped };
            let (first, mut at_end) = self.trim_continuation(token);
            if at_end && first.is_empty() {
                continue;
            }
            let start_line = line_no;
            let mut last_line = line_no;
            let mut joined = Joined::new();
            joined.push(first, line_no, lead + 1);
            let mut empty_continuation = false;
            while !at_end {
                let Some((n, raw)) = self.read_line()? else {
                    break;
                };
                last_line = n;
                let token = trim_newline(&raw);
                self.directive(n, token)?;
                if is_comment(&raw) {
                    continue;
                }
                if token.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, end) = self.trim_continuation(token);
                at_end = end;
                joined.push(part, n, 1);
            }
            if empty_continuation {
                warnings.push(Warning {
                    position: Position::new(last_line, 1),
                    message: format!("Empty continuation line found in: {}", joined.text),
                });
            }
            let mut node = self
                .node_from_line(&joined, 0, &comments)
                .map_err(|(pos, e)| self.source.error(pos, e.to_string()))?;
            if can_contain_heredoc(&node) && joined.text.contains("<<") {
                let heredocs = heredoc::heredocs_in_line(&joined.text)
                    .map_err(|e| self.error(start_line, node.start.column, e.to_string()))?;
                for mut h in heredocs {
                    let mut terminated = false;
                    while let Some((n, body_line)) = self.read_line()? {
                        last_line = n;
                        let candidate = body_line.trim_end_matches(['\r', '\n']);
                        let candidate = if h.chomp {
                            candidate.trim_start_matches('\t')
                        } else {
                            candidate
                        };
                        if candidate == h.name {
                            terminated = true;
                            break;
                        }
                        h.content.push_str(&body_line);
                        if self.next < self.lines.len() || self.trailing_newline {
                            h.content.push('\n');
                        }
                    }
                    if !terminated {
                        return Err(self.error(
                            start_line,
                            node.start.column,
                            "unterminated heredoc",
                        ));
                    }
                    node.heredocs.push(h);
                }
            }
            node.end_line = last_line;
            nodes.push(node);
            comments.clear();
        }
        let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
            return Err(self.error(self.lines.len().max(1), 1, "file with no instructions"));
        };
        let (start_line, end_line) = (first.start.line, last.end_line);
        Ok(Document {
            source: self.source,
            directives: self.directives,
            escape: self.escape,
            nodes,
            warnings,
            start_line,
            end_line,
        })
    }

    /// Builds a node from the joined line starting at char `offset` (non-zero for the
    /// instruction wrapped by ONBUILD). Errors carry the position they point at.
    fn node_from_line(
        &self,
        joined: &Joined,
        offset: usize,
        comments: &[String],
    ) -> Result<Node, (Position, ParseError)> {
        let chars: Vec<char> = joined.text.chars().skip(offset).collect();
        let lead = chars.iter().take_while(|c| c.is_whitespace()).count();
        let body = &chars[lead..];
        let kw_len = body
            .iter()
            .position(|c| matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' '))
            .unwrap_or(body.len());
        let keyword_as_written: String = body[..kw_len].iter().collect();
        let start = joined.position(offset + lead);
        let after_kw = &body[kw_len..];
        let sep = after_kw
            .iter()
            .take_while(|c| matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' '))
            .count();
        let rest_chars = &after_kw[sep..];
        let rest_offset = offset + lead + kw_len + sep;
        let (flags, rest): (Vec<(String, usize)>, String) = if sep == 0 && rest_chars.is_empty() {
            (Vec::new(), String::new())
        } else {
            let e = flags::extract_flags(rest_chars, self.escape);
            let rest: String = e
                .rest_start
                .map(|i| rest_chars[i..].iter().collect())
                .unwrap_or_default();
            (e.flags, rest)
        };
        let rest_trimmed = rest.trim();
        let keyword = keyword_as_written.to_lowercase();
        let original: String = chars.iter().collect();
        let mut node = Node {
            keyword: keyword.clone(),
            keyword_as_written,
            flag_positions: flags
                .iter()
                .map(|(_, i)| joined.position(rest_offset + i))
                .collect(),
            flags: flags.into_iter().map(|(f, _)| f).collect(),
            args: Vec::new(),
            child: None,
            json: false,
            heredocs: Vec::new(),
            original,
            start,
            end_line: start.line,
            prev_comments: comments.to_vec(),
        };
        if keyword == "onbuild" {
            if !rest_trimmed.is_empty() {
                let lead_ws = rest.chars().count() - rest.trim_start().chars().count();
                let child_offset =
                    rest_offset + (rest_chars.len() - rest.chars().count()) + lead_ws;
                let child = self.node_from_line(joined, child_offset, &[])?;
                node.json = child.json;
                node.child = Some(Box::new(child));
            }
            return Ok(node);
        }
        let args = line_parsers::parse_args(&keyword, rest_trimmed, self.escape)
            .map_err(|m| (start, m))?;
        node.args = args.words;
        node.json = args.json;
        Ok(node)
    }
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// RUN, COPY and ADD in shell form, also wrapped by ONBUILD.
fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.child, node.keyword.as_str()) {
        (Some(child), "onbuild") => child,
        _ => node,
    };
    matches!(n.keyword.as_str(), "run" | "copy" | "add") && !n.json
}

#[cfg(test)]
mod tests;
