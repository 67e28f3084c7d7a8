//! Authentication and authorization. Today: offline verification of
//! service-account tokens against the issuer's keys ([`token`]) and an
//! in-process evaluator of Kubernetes RBAC objects ([`rbac`]); enforcement
//! on the servers comes next.

pub mod rbac;
pub mod token;
