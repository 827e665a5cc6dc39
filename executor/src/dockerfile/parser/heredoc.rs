//! Recognising heredocs (`<<EOF`, `<<-EOF`, `3<<EOF`, `<<'EOF'`) in RUN, COPY and ADD.
//!
//! The instruction text is split into words the way the shell lexer does with quotes and
//! escapes kept; every word of the form `[fd]<<[-][space]delimiter` names a heredoc. The
//! delimiter is itself lexed: it must be one word; if any part of it was quoted, the body
//! is taken literally (no expansion).

use super::parse_error::ParseError;
use crate::dockerfile::ast::Heredoc;
use crate::dockerfile::shell::Lexer;

/// The heredocs named on an instruction line, in order (bodies still empty).
pub(super) fn heredocs_in_line(line: &str) -> Result<Vec<Heredoc>, ParseError> {
    let lexer = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    let words = lexer.process_words(line, &Vec::new()).unwrap_or_default();
    let mut out = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc_word(&word)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// Parses one word as a heredoc introducer: `Ok(None)` when it is not one.
pub fn parse_heredoc_word(word: &str) -> Result<Option<Heredoc>, ParseError> {
    let digits = word.chars().take_while(char::is_ascii_digit).count();
    let (fd_text, rest) = word.split_at(digits);
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(['\t', '\n', '\u{0c}', '\r', ' ']);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = fd_text
        .parse::<u64>()
        .map_or(if fd_text.is_empty() { 0 } else { u32::MAX }, |v| {
            u32::try_from(v).unwrap_or(u32::MAX)
        });
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let empty: Vec<(String, String)> = Vec::new();
    let words = lexer.process_words(rest, &empty)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = lexer.clone().raw_quotes(true).process_words(rest, &empty)?;
    if raw.len() != words.len() {
        return Err(ParseError::InconsistentHeredoc(rest.to_string()));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: name.clone(),
        file_descriptor: fd,
        expand: quotes(name) == quotes(&raw[0]),
        chomp,
        content: String::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(w: &str) -> Option<(String, u32, bool, bool)> {
        parse_heredoc_word(w)
            .unwrap()
            .map(|h| (h.name, h.file_descriptor, h.expand, h.chomp))
    }

    #[test]
    fn recognised_forms() {
        assert_eq!(word("<<EOF"), Some(("EOF".into(), 0, true, false)));
        assert_eq!(word("<<-EOF"), Some(("EOF".into(), 0, true, true)));
        assert_eq!(word("3<<EOF"), Some(("EOF".into(), 3, true, false)));
        assert_eq!(word("<< EOF"), Some(("EOF".into(), 0, true, false)));
        assert_eq!(word("<<- EOF"), Some(("EOF".into(), 0, true, true)));
        assert_eq!(word("<< -EOF"), Some(("-EOF".into(), 0, true, false)));
        assert_eq!(word("<<'EOF'"), Some(("EOF".into(), 0, false, false)));
        assert_eq!(word("<<\"EOF\""), Some(("EOF".into(), 0, false, false)));
        assert_eq!(word("<<EO\"F\""), Some(("EOF".into(), 0, false, false)));
        assert_eq!(word("<<$EOF"), Some(("$EOF".into(), 0, true, false)));
        assert_eq!(word("<<eo'f'"), Some(("eof".into(), 0, false, false)));
        assert_eq!(word("<<eo\\'f"), Some(("eo'f".into(), 0, true, false)));
        assert_eq!(word("<<'e'o\\'f"), Some(("eo'f".into(), 0, false, false)));
        assert_eq!(
            word("<<'one two'"),
            Some(("one two".into(), 0, false, false))
        );
    }

    #[test]
    fn not_heredocs_and_errors() {
        for w in ["", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(word(w), None, "{w:?}");
        }
        assert!(parse_heredoc_word("<<'EOF").is_err());
        assert!(parse_heredoc_word("<<EOF\"").is_err());
        let line = heredocs_in_line("COPY <<FILE1 <<FILE2 /dest").unwrap();
        assert_eq!(line.len(), 2);
        assert!(heredocs_in_line("RUN echo \"<<EOF\" '<<EOF'")
            .unwrap()
            .is_empty());
    }
}
