//! Argument checks shared by several instructions: ENV/LABEL pairs, COPY/ADD sources and
//! destination (with heredoc files), and `RUN --mount` values read at parse time.

use super::mount::{self, MountSpecError, RunMount};
use super::{InlineFile, KeyValue};
use crate::dockerfile::ast::Node;
use crate::dockerfile::parser::parse_heredoc_word;
use crate::dockerfile::shell::Lexer;

/// Why an instruction's arguments are not valid (BuildKit's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentsError {
    #[error("{0} requires at least one argument")]
    NoArgument(String),
    #[error("Bad input to {0}, too many arguments")]
    TooMany(String),
    #[error("{0} names can not be blank")]
    BlankName(String),
    #[error("{0} requires at least two arguments")]
    NoDestination(String),
    #[error("{0} cannot accept a heredoc as a destination")]
    HeredocDestination(String),
}

pub(super) fn key_values(args: &[String], kw: &str) -> Result<Vec<KeyValue>, ArgumentsError> {
    if args.is_empty() {
        return Err(ArgumentsError::NoArgument(kw.to_string()));
    }
    if !args.len().is_multiple_of(3) {
        return Err(ArgumentsError::TooMany(kw.to_string()));
    }
    args.chunks(3)
        .map(|c| {
            if c[0].is_empty() {
                Err(ArgumentsError::BlankName(kw.to_string()))
            } else {
                Ok(KeyValue {
                    key: c[0].clone(),
                    value: c[1].clone(),
                })
            }
        })
        .collect()
}

pub(super) type SourcesAndDest = (Vec<String>, Vec<InlineFile>, String);

pub(super) fn sources_and_dest(node: &Node, kw: &str) -> Result<SourcesAndDest, ArgumentsError> {
    let (dest, srcs) = match node.args.split_last() {
        Some((d, s)) => (d.clone(), s),
        None => return Err(ArgumentsError::NoDestination(kw.to_string())),
    };
    if matches!(parse_heredoc_word(&dest), Ok(Some(_))) {
        return Err(ArgumentsError::HeredocDestination(kw.to_string()));
    }
    let mut sources = Vec::new();
    let mut inline_files = Vec::new();
    for src in srcs {
        match parse_heredoc_word(src) {
            Ok(Some(h)) => {
                let body = node.heredocs.iter().find(|b| b.name == h.name);
                let data = body.map(|b| {
                    let mut b = b.clone();
                    b.chomp = h.chomp;
                    b.chomped()
                });
                inline_files.push(InlineFile {
                    name: h.name,
                    data: data.unwrap_or_default(),
                    expand: h.expand,
                });
            }
            _ => sources.push(src.clone()),
        }
    }
    Ok((sources, inline_files, dest))
}

/// A mount read when the Dockerfile is parsed: fully when it holds no `$` (expanding a
/// word without variables only removes its quotes and escapes), else `from` only.
pub(super) fn parse_mount_at_parse_time(
    spec: &str,
    escape: char,
) -> Result<RunMount, MountSpecError> {
    if spec.contains('$') {
        return mount::parse_mount(spec, None);
    }
    let lexer = Lexer::new(escape);
    let empty: Vec<(String, String)> = Vec::new();
    let expand = |w: &str| lexer.process_word(w, &empty);
    // `from` is validated by the first pass (it never expands).
    let from = mount::parse_mount(spec, None)?.from;
    let mut m = mount::parse_mount(spec, Some(&expand))?;
    m.from = from;
    Ok(m)
}
