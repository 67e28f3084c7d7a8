//! Point-in-time-correct training sets (`larder historical`).

use std::path::PathBuf;

use super::OfflineError;
use crate::config::Config;

/// `larder historical`.
#[derive(clap::Args, Debug, Clone)]
pub struct HistoricalArgs {
    /// Feature refs `[namespace/]view:feature`.
    #[arg(long, num_args = 1.., conflicts_with = "feature_service", required_unless_present = "feature_service")]
    pub features: Vec<String>,
    /// A feature service `[namespace/]name` instead of refs.
    #[arg(long)]
    pub feature_service: Option<String>,
    /// Entity rows: a .csv or .parquet file with the join keys and
    /// `event_timestamp`.
    #[arg(
        long,
        conflicts_with = "entity_sql",
        required_unless_present = "entity_sql"
    )]
    pub entities: Option<PathBuf>,
    /// Entity rows from a query against the offline store.
    #[arg(long)]
    pub entity_sql: Option<String>,
    /// Where the training set goes: .parquet or .csv.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// The namespace the caller acts in (unqualified refs, and whose
    /// database user connects).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
}

/// Runs `larder historical`.
pub async fn run(config: &Config, args: HistoricalArgs) -> Result<(), OfflineError> {
    let _ = (config, args);
    Err(OfflineError::Invalid(
        "larder historical is not built yet".into(),
    ))
}
