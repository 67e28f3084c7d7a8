//! The one write path of streamed rows: [`write_batch`]. Kafka ingestion
//! and the push API both call it, so whatever happens to a batch on its way
//! into the stores happens here, once.

use crate::offline::OfflineStore;
use crate::online::{OnlineStore, ViewRow};
use crate::registry::{NamespaceDefs, ServedView};

use super::{IngestError, PushTo};

/// What a batch did to the stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows the online store took (newer than what it held).
    pub online: usize,
    /// Rows appended to the batch source (not already stored).
    pub offline: u64,
}

/// Writes `rows` of `view` (a view of namespace `defs`) to the online store
/// (newer-only) and/or appended to the view's batch source (idempotent),
/// as `to` says. Both writes run concurrently; the call succeeds only when
/// every requested write did, so a caller that retries a failed batch, or
/// replays one, changes nothing that was already stored.
///
/// `offline` is required when `to` includes the offline store.
pub async fn write_batch(
    defs: &NamespaceDefs,
    view: &ServedView,
    rows: &[ViewRow],
    to: PushTo,
    online: &OnlineStore,
    offline: Option<&OfflineStore>,
) -> Result<Written, IngestError> {
    let name = format!("feature view {}/{}", view.view.namespace, view.view.name);
    if rows.is_empty() {
        return Ok(Written::default());
    }
    if to.online() && !view.view.online {
        return Err(IngestError::Invalid(format!(
            "{name} is not served online (online: false); push to the offline store only"
        )));
    }
    let source = if to.offline() {
        let Some(source_name) = &view.view.source else {
            return Err(IngestError::Invalid(format!(
                "{name} has no batch source to log rows to"
            )));
        };
        let source = defs.sources.get(source_name).ok_or_else(|| {
            IngestError::NotFound(format!(
                "{name}: no data source {source_name:?} in namespace {}",
                defs.name
            ))
        })?;
        let Some(store) = offline else {
            return Err(IngestError::Unavailable(format!(
                "{name}: no offline store is configured for this server"
            )));
        };
        Some((source, store))
    } else {
        None
    };
    let online_write = async {
        if !to.online() {
            return Ok(0);
        }
        let written = online
            .write_rows(view, rows)
            .await
            .map_err(|e| IngestError::online(e, &format!("writing {name} online")))?;
        // On-demand views computed at write time from this view's rows:
        // derived with the snapshot's compiled program and stored under
        // their own names, newer-only like the rows themselves.
        for odfv in defs.derived_from(&view.view.name) {
            let Some(stored) = &odfv.stored else { continue };
            let (derived, _) = odfv.derive_rows(rows);
            online.write_rows(stored, &derived).await.map_err(|e| {
                IngestError::online(
                    e,
                    &format!(
                        "writing on-demand feature view {}/{} online",
                        odfv.odfv.namespace, odfv.odfv.name
                    ),
                )
            })?;
        }
        Ok(written)
    };
    let offline_write = async {
        let Some((source, store)) = source else {
            return Ok(0);
        };
        crate::offline::write::append_rows(store, source, &view.view, rows)
            .await
            .map_err(|e| IngestError::offline(e, &format!("logging {name} offline")))
    };
    let (online_result, offline_result) = futures::join!(online_write, offline_write);
    Ok(Written {
        online: online_result?,
        offline: offline_result?,
    })
}
