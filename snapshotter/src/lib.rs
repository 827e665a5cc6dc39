//! kiln's snapshotter (being written in this change).
