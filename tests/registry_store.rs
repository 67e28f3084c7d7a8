//! The registry store contract against SQLite, a real PostgreSQL and a real
//! MariaDB. Each test creates its own database and drops it afterwards.

mod common;

use std::sync::Arc;

use common::db::TestDb;
use larder::registry::store::{RegistryStore, SqlRegistryStore, StoreError};
use serde_json::json;

fn view(features: usize) -> serde_json::Value {
    json!({
        "apiVersion": "features.kubeflow.org/v1",
        "kind": "FeatureView",
        "spec": {"features": (0..features).map(|i| json!({"name": format!("f{i}"), "valueType": "INT64"})).collect::<Vec<_>>()}
    })
}

async fn contract(kind: &str) {
    let db = TestDb::new(kind).await;
    let store = SqlRegistryStore::connect(&db.url).await.unwrap();
    assert_eq!(store.version().await.unwrap(), 0);

    let a = store
        .put("FeatureView", "kubeflow-alice", "a_fv", &view(1), Some(0))
        .await
        .unwrap();
    assert_eq!(a.resource_version, 1);
    assert_eq!(a.uid.len(), 36);
    let b = store
        .put("FeatureView", "kubeflow-bob", "b_fv", &view(2), None)
        .await
        .unwrap();
    assert_eq!(b.resource_version, 2);

    // Create-only on an existing object, and a stale replace: conflicts
    // that change nothing.
    let err = store
        .put("FeatureView", "kubeflow-alice", "a_fv", &view(3), Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("kubeflow-alice/a_fv"), "{err}");
    let a2 = store
        .put("FeatureView", "kubeflow-alice", "a_fv", &view(3), Some(1))
        .await
        .unwrap();
    assert_eq!(a2.resource_version, 3, "failed writes take no version");
    assert_eq!(a2.uid, a.uid);
    assert_eq!(a2.created_at, a.created_at);
    assert_eq!(
        store
            .get("FeatureView", "kubeflow-alice", "a_fv")
            .await
            .unwrap()
            .unwrap()
            .body,
        view(3)
    );
    assert!(
        store
            .get("Entity", "kubeflow-alice", "a_fv")
            .await
            .unwrap()
            .is_none()
    );

    let all = store.list("FeatureView", None).await.unwrap();
    let names: Vec<_> = all.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["a_fv", "b_fv"]);
    let bobs = store
        .list("FeatureView", Some("kubeflow-bob"))
        .await
        .unwrap();
    assert_eq!(bobs.len(), 1);

    let err = store
        .delete("FeatureView", "kubeflow-bob", "b_fv", Some(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 2, .. }));
    store
        .delete("FeatureView", "kubeflow-bob", "b_fv", Some(2))
        .await
        .unwrap();
    let err = store
        .delete("FeatureView", "kubeflow-bob", "b_fv", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

    let changes = store.changes_since(1).await.unwrap();
    let summary: Vec<_> = changes
        .iter()
        .map(|c| (c.resource_version, c.name.as_str(), c.deleted))
        .collect();
    assert_eq!(
        summary,
        [(2, "b_fv", false), (3, "a_fv", false), (4, "b_fv", true)]
    );
    assert_eq!(store.version().await.unwrap(), 4);

    // A second connection sees the same store, and migrations are
    // idempotent.
    let again = SqlRegistryStore::connect(&db.url).await.unwrap();
    assert_eq!(again.version().await.unwrap(), 4);
    drop(again);
    db.cleanup(store).await;
}

/// Writers race on shared and distinct objects, retrying on conflicts:
/// every successful write gets its own version, versions are gapless and
/// ordered, and no update is lost.
async fn parallel_writers(kind: &str) {
    let db = TestDb::new(kind).await;
    let store = Arc::new(SqlRegistryStore::connect(&db.url).await.unwrap());
    const WRITERS: i64 = 8;
    const ROUNDS: i64 = 5;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                store
                    .put(
                        "Entity",
                        "ns",
                        &format!("own_{w}_{r}"),
                        &json!({"w": w}),
                        Some(0),
                    )
                    .await
                    .unwrap();
                // Read-modify-write of one shared counter object.
                loop {
                    let current = store.get("Entity", "ns", "shared").await.unwrap();
                    let (rv, count) = match &current {
                        Some(o) => (o.resource_version, o.body["count"].as_i64().unwrap()),
                        None => (0, 0),
                    };
                    match store
                        .put(
                            "Entity",
                            "ns",
                            "shared",
                            &json!({"count": count + 1}),
                            Some(rv),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let shared = store.get("Entity", "ns", "shared").await.unwrap().unwrap();
    assert_eq!(shared.body["count"], WRITERS * ROUNDS, "no update is lost");
    let total = WRITERS * ROUNDS * 2;
    assert_eq!(store.version().await.unwrap(), total);
    let versions: Vec<i64> = store
        .changes_since(0)
        .await
        .unwrap()
        .iter()
        .map(|c| c.resource_version)
        .collect();
    assert_eq!(versions, (1..=total).collect::<Vec<_>>());
    let store = Arc::into_inner(store).unwrap();
    db.cleanup(store).await;
}

#[tokio::test]
async fn sqlite_store_contract() {
    contract("sqlite").await;
}

#[tokio::test]
async fn postgres_store_contract() {
    contract("postgres").await;
}

#[tokio::test]
async fn mariadb_store_contract() {
    contract("mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_parallel_writers() {
    parallel_writers("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_parallel_writers() {
    parallel_writers("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_parallel_writers() {
    parallel_writers("mysql").await;
}
