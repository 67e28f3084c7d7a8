//! The registry with authentication and RBAC: every verb is checked, lists
//! and snapshots show exactly what the caller may get, and a share by name
//! gives Bob that one view. Real signed tokens, the shipped RBAC manifests.

mod common;

use std::sync::Arc;

use common::jwt;
use larder::auth::Auth;
use larder::registry::api::{Registry, run};
use larder::registry::store::SqlRegistryStore;
use serde_json::Value;

const V1: &str = "/apis/features.kubeflow.org/v1";

const ALICE_OBJECTS: [(&str, &str); 3] = [
    (
        "entities/driver",
        "apiVersion: features.kubeflow.org/v1\nkind: Entity\nmetadata: { name: driver, namespace: kubeflow-alice }\nspec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }\n",
    ),
    (
        "featureviews/driver_daily_stats",
        "apiVersion: features.kubeflow.org/v1\nkind: FeatureView\nmetadata: { name: driver_daily_stats, namespace: kubeflow-alice }\nspec:\n  entities: [driver]\n  features: [{ name: trips, valueType: INT64 }]\n",
    ),
    (
        "featureviews/driver_payouts",
        "apiVersion: features.kubeflow.org/v1\nkind: FeatureView\nmetadata: { name: driver_payouts, namespace: kubeflow-alice }\nspec:\n  entities: [driver]\n  features: [{ name: payout, valueType: DOUBLE }]\n",
    ),
];

struct Api {
    base: String,
    auth: Arc<Auth>,
    policy: tempfile::TempDir,
    _db: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Api {
    async fn start() -> Api {
        let db = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/registry.db?mode=rwc", db.path().display());
        let store = SqlRegistryStore::connect(&url).await.unwrap();
        let policy = jwt::story_policy();
        let config = jwt::auth_config(db.path(), policy.path());
        let auth = Arc::new(Auth::from_config(&config).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run(
            listener,
            Registry::with_auth(store, auth.clone()),
            async move {
                let _ = stopped.await;
            },
        ));
        Api {
            base,
            auth,
            policy,
            _db: db,
            _stop: stop,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        yaml: Option<&str>,
    ) -> (u16, Value) {
        let url = if path.starts_with('/') && !path.starts_with(V1) {
            format!("{}{path}", self.base)
        } else {
            format!("{}{V1}/{}", self.base, path.trim_start_matches('/'))
        };
        let mut request = reqwest::Client::new().request(method, url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(body) = yaml {
            request = request
                .header("content-type", "application/yaml")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    fn share(&self) {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac/share-example.yaml"),
            self.policy.path().join("share.yaml"),
        )
        .unwrap();
        let policy = larder::auth::load_policy(&[self.policy.path().to_path_buf()]).unwrap();
        self.auth.replace_policy(policy).unwrap();
    }
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn every_verb_is_authorized_and_lists_show_what_may_be_got() {
    let api = Api::start().await;
    let alice = jwt::token("kubeflow-alice", "default-editor");
    let bob = jwt::token("kubeflow-bob", "default-editor");
    let reader = jwt::token("kubeflow", "larder-feature-server");

    // Alice creates her objects; Bob may not create in her namespace.
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("namespaces/kubeflow-alice/{}", ALICE_OBJECTS[0].0),
            Some(&bob),
            Some(ALICE_OBJECTS[0].1),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert!(
        body["message"].as_str().unwrap().contains("kubeflow-bob"),
        "{body}"
    );
    for (path, yaml) in ALICE_OBJECTS {
        let (status, body) = api
            .call(
                reqwest::Method::PUT,
                &format!("namespaces/kubeflow-alice/{path}"),
                Some(&alice),
                Some(yaml),
            )
            .await;
        assert_eq!(status, 201, "{path}: {body}");
    }

    // Before the share Bob can neither get nor list Alice's views, nor
    // find them in the snapshot.
    let (status, body) = api
        .get(
            "namespaces/kubeflow-alice/featureviews/driver_daily_stats",
            &bob,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("driver_daily_stats"),
        "{body}"
    );
    let (status, body) = api
        .get("namespaces/kubeflow-alice/featureviews", &bob)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = api.get("snapshot", &bob).await;
    assert_eq!(status, 200, "{body}");
    assert!(names(&body).is_empty(), "{body}");
    // Bob may list his own (empty) namespace.
    let (status, body) = api.get("namespaces/kubeflow-bob/featureviews", &bob).await;
    assert_eq!(status, 200, "{body}");
    assert!(names(&body).is_empty());

    // After the share: exactly the shared view, by get, list and snapshot.
    api.share();
    let (status, body) = api
        .get(
            "namespaces/kubeflow-alice/featureviews/driver_daily_stats",
            &bob,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .get(
            "namespaces/kubeflow-alice/featureviews/driver_payouts",
            &bob,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let shared = ["FeatureView/kubeflow-alice/driver_daily_stats".to_owned()];
    let (status, body) = api
        .get("namespaces/kubeflow-alice/featureviews", &bob)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), shared);
    let (status, body) = api.get("featureviews", &bob).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), shared);
    let (_, body) = api.get("snapshot", &bob).await;
    assert_eq!(names(&body), shared);
    // Entities were not shared.
    let (status, _) = api.get("namespaces/kubeflow-alice/entities", &bob).await;
    assert_eq!(status, 403);

    // A share of get is not a share of update or delete.
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            "namespaces/kubeflow-alice/featureviews/driver_daily_stats",
            Some(&bob),
            Some(ALICE_OBJECTS[1].1),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = api
        .call(
            reqwest::Method::DELETE,
            "namespaces/kubeflow-alice/featureviews/driver_daily_stats",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = api
        .get(
            "namespaces/kubeflow-alice/featureviews/driver_daily_stats/materializations",
            &bob,
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // Alice sees all of hers; the feature server's account sees everything.
    let (_, body) = api.get("snapshot", &alice).await;
    assert_eq!(names(&body).len(), 3, "{body}");
    let (_, body) = api.get("snapshot", &reader).await;
    assert_eq!(names(&body).len(), 3, "{body}");
    let (status, body) = api.get("featureviews", &reader).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body).len(), 2);
    // The reader may not write.
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            "namespaces/kubeflow-alice/featureviews/driver_payouts",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(status, 403);

    // Alice may delete her own.
    let (status, body) = api
        .call(
            reqwest::Method::DELETE,
            "namespaces/kubeflow-alice/featureviews/driver_payouts",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn tokens_are_required_except_for_health_and_the_schema() {
    let api = Api::start().await;
    for path in [
        "snapshot",
        "featureviews",
        "namespaces/kubeflow-alice/featureviews/x",
    ] {
        let (status, body) = api.call(reqwest::Method::GET, path, None, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["reason"], "Unauthorized");
    }
    for (why, token) in jwt::bad_tokens() {
        let (status, body) = api.get("snapshot", &token).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert!(
            !body.to_string().contains(&token),
            "{why}: the token is echoed"
        );
    }
    for path in ["/health", "/openapi.json"] {
        let (status, _) = api.call(reqwest::Method::GET, path, None, None).await;
        assert_eq!(status, 200, "{path}");
    }
}
