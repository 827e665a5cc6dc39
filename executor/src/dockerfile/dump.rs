//! BuildKit's AST dump format, byte for byte: one `(keyword ["flags"…] "arg"…)` line per
//! instruction, strings quoted as Go's `strconv.Quote` does. The conformance cases compare
//! against it, and `kiln debug parse` prints it.

use super::ast::{Document, Node};

/// One instruction, without the surrounding parentheses.
pub fn dump_node(node: &Node) -> String {
    let mut out = node.keyword_as_written.to_lowercase();
    if !node.flags.is_empty() {
        out.push_str(" [");
        let flags: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        out.push_str(&flags.join(" "));
        out.push(']');
    }
    if let Some(child) = &node.child {
        out.push_str(" (");
        out.push_str(&dump_node(child));
        out.push(')');
    }
    for a in &node.args {
        out.push(' ');
        out.push_str(&go_quote(a));
    }
    out.trim().to_string()
}

/// The whole document: one `(…)` line per instruction, each ending with `\n`.
pub fn dump_document(doc: &Document) -> String {
    doc.nodes
        .iter()
        .map(|n| format!("({})\n", dump_node(n)))
        .collect()
}

/// Quotes `s` exactly like Go's `strconv.Quote` for valid UTF-8 (invalid input was already
/// made valid by the parser's lossy decoding).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint`: letters, marks, numbers, punctuation and
/// symbols, plus the ASCII space; not other spaces, controls, format characters, private
/// use or noncharacters. (Rust's standard library has no general-category table;
/// unassigned code points count as printable here.)
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_or_private = matches!(u,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x08E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    let noncharacter = (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE;
    !(format_or_private || noncharacter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\u{7}\u{1b}\u{7f}"), r#""\x00\a\x1b\x7f""#);
        assert_eq!(go_quote("♥ ☃ é"), "\"♥ ☃ é\"");
        assert_eq!(
            go_quote("\u{a0}\u{200b}\u{feff}"),
            r#""\u00a0\u200b\ufeff""#
        );
        assert_eq!(go_quote("\u{f0000}"), r#""\U000f0000""#);
        assert_eq!(go_quote("\t\n\r\u{b}\u{c}\u{8}"), r#""\t\n\r\v\f\b""#);
    }
}
