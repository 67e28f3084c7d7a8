//! Definitions as the feature server sees them (an immutable snapshot,
//! swapped atomically when definitions change), and where the registry
//! keeps them ([`store`]).

pub mod api;
pub mod client;
pub mod follower;
mod snapshot;
pub mod store;

pub use snapshot::{FastMap, NamespaceDefs, RegistrySnapshot, ServedOdfv, ServedView};
