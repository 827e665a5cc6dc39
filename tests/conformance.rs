//! Conformance tests (being written).
