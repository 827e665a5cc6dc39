//! Word expansion with BuildKit shell-lexer semantics (being written in this change).
