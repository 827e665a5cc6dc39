//! The Dockerfile frontend: from bytes to typed instructions, the way BuildKit reads them.
//!
//! - [`source`]: the file's text and name, and code frames for errors ([`DockerfileError`]).
//! - [`chmod`]: `--chmod` values of COPY and ADD.
//! - [`ast`]: the low-level parse tree ([`Node`], [`Heredoc`], [`Document`]).
//! - [`parser`]: directives, comments, continuations, heredocs, JSON vs shell form, flags.
//! - [`dump`]: BuildKit's AST dump format (for the conformance cases and `kiln debug parse`).
//! - [`shell`]: word expansion with BuildKit's shell-lexer semantics.
//! - [`instructions`]: typed instructions with validated flags, `RUN --mount` and friends.

pub mod ast;
pub mod chmod;
pub mod dump;
pub mod instructions;
pub mod parser;
pub mod shell;
pub mod source;
pub mod suggest;

pub use ast::{Directives, Document, Heredoc, Node, Warning};
pub use parser::parse;
pub use source::{DockerfileError, Position, Source};
