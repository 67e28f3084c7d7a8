//! Definitions as the feature server sees them: an immutable snapshot,
//! swapped atomically when definitions change.

mod snapshot;

pub use snapshot::{FastMap, NamespaceDefs, RegistrySnapshot, ServedView};
