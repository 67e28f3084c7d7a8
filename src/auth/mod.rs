//! Authentication and authorization. Today: an in-process evaluator of
//! Kubernetes RBAC objects ([`rbac`]); token verification and enforcement
//! on the servers come next.

pub mod rbac;
