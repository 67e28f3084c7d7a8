//! larder: a feature store for Kubernetes and Kubeflow that speaks Feast's
//! data plane.
//!
//! # Layout
//!
//! - [`model`]: the domain: entities, feature views, feature services,
//!   feature refs, typed values. Imports no wire or database crate.
//! - [`definitions`]: Kubernetes-style YAML manifests -> domain objects.
//! - [`registry`]: the immutable [`registry::RegistrySnapshot`] the server
//!   reads definitions through, with lookups precomputed.
//! - [`online`]: the online store in Feast's layout: key encoding and
//!   hashing ([`online::layout`]), value bytes ([`online::codec`]), Redis and
//!   embedded SQLite back ends.
//! - [`serving`]: the feature server: GetOnlineFeatures in domain terms
//!   ([`serving::online`]), thin gRPC and HTTP transports, errors mapped to
//!   statuses in one place, `run(listener, server, shutdown)`.
//! - [`proto`]: generated Feast wire types and their conversions.
//! - [`config`]: defaults, YAML file, `LARDER__*` environment.
//! - [`telemetry`]: Prometheus metrics, tracing set-up.
//! - [`auth`]: Kubernetes RBAC evaluated in-process.
//! - [`transform`]: on-demand features: CEL expressions compiled and
//!   type-checked once per snapshot, evaluated the same way for serving,
//!   training sets and write-time transforms.
//! - [`ingest`]: stream ingestion (`larder ingest`, a Kafka consumer group)
//!   and the push API's domain side; one write path for both.
//! - [`cli`]: the `larder` command and `larder quickstart`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod definitions;
pub mod ingest;
pub mod model;
pub mod offline;
pub mod online;
pub mod proto;
pub mod registry;
pub mod serving;
pub mod telemetry;
pub mod transform;
