//! See the module documentation of [`crate::offline`].
