//! What the parser's line-level steps report before a position is attached: each step
//! (directive scanner, line parsers, heredoc recognition) returns a [`ParseError`], and
//! the parser turns it into a [`DockerfileError`](crate::dockerfile::DockerfileError)
//! that points at the line. The texts are BuildKit's.

use crate::dockerfile::dump::go_quote;
use crate::dockerfile::shell::ShellError;

/// Why one line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A parser directive given twice.
    #[error("only one {0} parser directive can be used")]
    RepeatedDirective(&'static str),
    /// A JSON array holding anything but strings.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    /// ENV/LABEL in the legacy `key value` form without a value.
    #[error("{0} must have two arguments")]
    MissingValue(&'static str),
    /// ENV/LABEL in the `k=v` form with a word that has no `=`.
    #[error(
        "Syntax error - can't find = in {}. Must be of the form: name=value",
        go_quote(.0)
    )]
    MissingEquals(String),
    /// A heredoc delimiter the shell lexer cannot read.
    #[error(transparent)]
    HeredocWord(#[from] ShellError),
    /// The two lexings of a heredoc delimiter disagree.
    #[error("internal lexing of heredoc produced inconsistent results: {0}")]
    InconsistentHeredoc(String),
}
