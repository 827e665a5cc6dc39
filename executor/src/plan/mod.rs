//! The build plan (being written in this change).
