//! Shared helpers for kiln end-to-end and conformance tests.
