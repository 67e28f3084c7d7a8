//! A feature server following the registry: it loads the snapshot, then
//! long-polls for newer ones and swaps each in atomically. The hot path
//! never waits on the registry: when the registry is unreachable the last
//! good snapshot keeps serving, its age is reported, and the follower
//! retries with backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::RegistrySnapshot;
use crate::definitions;
use crate::serving::FeatureServer;

/// How the definitions a server follows are doing.
#[derive(Debug, Default)]
pub struct SyncState {
    /// Milliseconds since the epoch of the last answer from the registry;
    /// 0 before the first.
    last_sync_ms: AtomicI64,
    /// The registry's resourceVersion being served; -1 before the first.
    version: AtomicI64,
}

impl SyncState {
    pub fn new() -> Self {
        SyncState {
            last_sync_ms: AtomicI64::new(0),
            version: AtomicI64::new(-1),
        }
    }

    /// Seconds since the registry last answered, `None` before it ever did.
    pub fn seconds_since_sync(&self) -> Option<f64> {
        let last = self.last_sync_ms.load(Ordering::Relaxed);
        (last > 0).then(|| (now_ms() - last) as f64 / 1000.0)
    }

    pub fn version(&self) -> Option<i64> {
        let v = self.version.load(Ordering::Relaxed);
        (v >= 0).then_some(v)
    }

    fn synced(&self, version: Option<i64>) {
        self.last_sync_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(v) = version {
            self.version.store(v, Ordering::Relaxed);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("registry unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("registry answered {0}")]
    Status(u16),
    #[error("registry snapshot is not usable: {0}")]
    Invalid(String),
}

/// Turns a snapshot document of the registry API into a `RegistrySnapshot`.
pub fn snapshot_from_document(
    document: serde_json::Value,
    projects: &BTreeMap<String, String>,
) -> Result<(i64, RegistrySnapshot), FollowError> {
    let version: i64 = document
        .pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| FollowError::Invalid("no metadata.resourceVersion".into()))?;
    let items = match document.get("items") {
        Some(serde_json::Value::Array(items)) => items.clone(),
        _ => return Err(FollowError::Invalid("no items".into())),
    };
    let objects = items
        .into_iter()
        .map(|item| definitions::parse_value("registry", item))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FollowError::Invalid(e.to_string()))?;
    let snapshot = RegistrySnapshot::build(objects, version as u64, projects)
        .map_err(|e| FollowError::Invalid(e.to_string()))?;
    Ok((version, snapshot))
}

/// Writes the snapshot document to `path` atomically (a temporary file
/// renamed over it), so a crash never leaves half a file.
fn save(path: &std::path::Path, document: &serde_json::Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(document)?)?;
    std::fs::rename(tmp, path)
}

/// Follows the registry at `base` (`http://host:port`) until the task is
/// dropped, replacing `server`'s snapshot whenever the registry's is newer.
/// With `cache`, every snapshot is also saved there, and a saved one is
/// served at start-up until the registry answers, so a restart during a
/// registry outage still serves.
pub async fn follow(
    server: Arc<FeatureServer>,
    state: Arc<SyncState>,
    base: String,
    projects: BTreeMap<String, String>,
    cache: Option<std::path::PathBuf>,
    token_file: Option<std::path::PathBuf>,
) {
    if let Some(path) = &cache
        && let Ok(bytes) = std::fs::read(path)
    {
        match serde_json::from_slice(&bytes)
            .map_err(|e| FollowError::Invalid(e.to_string()))
            .and_then(|doc| snapshot_from_document(doc, &projects))
        {
            Ok((version, snapshot)) => {
                server.replace_snapshot(snapshot);
                state.version.store(version, Ordering::Relaxed);
                tracing::info!(version, path = %path.display(), "serving the saved snapshot until the registry answers");
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "ignoring the saved snapshot")
            }
        }
    }
    let http = reqwest::Client::new();
    let url = format!(
        "{}/apis/features.kubeflow.org/v1/snapshot",
        base.trim_end_matches('/')
    );
    let mut backoff = Duration::from_millis(200);
    loop {
        // Read every time: projected tokens rotate.
        let token = match super::client::client_token(token_file.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the registry token");
                None
            }
        };
        let request = match state.version() {
            None => http.get(&url).timeout(Duration::from_secs(10)),
            Some(v) => http
                .get(&url)
                .query(&[
                    ("watch", "true".to_string()),
                    ("resourceVersion", v.to_string()),
                    ("timeoutSeconds", "20".to_string()),
                ])
                .timeout(Duration::from_secs(30)),
        };
        let request = match &token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let outcome: Result<(), FollowError> = async {
            let resp = request.send().await?;
            match resp.status().as_u16() {
                304 => {
                    state.synced(None);
                    Ok(())
                }
                200 => {
                    let document: serde_json::Value = resp.json().await?;
                    if let Some(path) = &cache
                        && let Err(e) = save(path, &document)
                    {
                        tracing::warn!(error = %e, path = %path.display(), "cannot save the snapshot");
                    }
                    let (version, snapshot) = snapshot_from_document(document, &projects)?;
                    server.replace_snapshot(snapshot);
                    state.synced(Some(version));
                    tracing::info!(version, "definitions updated from the registry");
                    Ok(())
                }
                other => Err(FollowError::Status(other)),
            }
        }
        .await;
        match outcome {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    serving_version = state.version(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot follow the registry; still serving the last snapshot"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
