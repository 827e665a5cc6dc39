//! Typed instructions (being written in this change).
