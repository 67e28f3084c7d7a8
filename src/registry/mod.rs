//! Definitions as the feature server sees them: an immutable snapshot,
//! swapped atomically when definitions change.

mod snapshot;

pub use snapshot::{NamespaceDefs, RegistrySnapshot, ServedView};
