//! Materialization: the latest offline rows per entity into the online
//! store (`larder materialize`, `larder materialize-incremental`).

use super::OfflineError;
use crate::config::Config;

/// `larder materialize START END`.
#[derive(clap::Args, Debug, Clone)]
pub struct MaterializeArgs {
    /// Start of the interval (exclusive), RFC 3339.
    pub start: String,
    /// End of the interval (inclusive), RFC 3339.
    pub end: String,
    /// Only these feature views (default: every view with a source).
    #[arg(long, num_args = 1..)]
    pub views: Vec<String>,
    /// Only this namespace (default: all).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

/// `larder materialize-incremental END`.
#[derive(clap::Args, Debug, Clone)]
pub struct IncrementalArgs {
    /// End of the interval (inclusive), RFC 3339.
    pub end: String,
    #[arg(long, num_args = 1..)]
    pub views: Vec<String>,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

/// Runs `larder materialize`.
pub async fn run(config: &Config, args: MaterializeArgs) -> Result<(), OfflineError> {
    let _ = (config, args);
    Err(OfflineError::Invalid(
        "larder materialize is not built yet".into(),
    ))
}

/// Runs `larder materialize-incremental`.
pub async fn run_incremental(config: &Config, args: IncrementalArgs) -> Result<(), OfflineError> {
    let _ = (config, args);
    Err(OfflineError::Invalid(
        "larder materialize-incremental is not built yet".into(),
    ))
}
