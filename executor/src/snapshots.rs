//! What the executor uses of the snapshotter: its facade and the types it hands out.
//! Nothing here names a backend.

pub use kiln_snapshotter::{
    copy_tree, ActiveSnapshot, BackendChoice, ChainId, CommitOptions, Committed, DiffOptions,
    LayerCompression, Snapshotter, SnapshotterError, View,
};
// The store itself, for the collector (`store::prune`): its lease, listing and removal.
pub use kiln_snapshotter::store::{
    process_running, remove_tree, Lease, Store as SnapshotStore, StoreError,
};
