//! BuildKit AST dump format (being written in this change).
