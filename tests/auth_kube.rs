//! TokenReview and SubjectAccessReview against a fake API server that
//! answers with recorded API server responses (tests/fixtures/kube/) and
//! records what larder sent, plus kubeconfig loading. One optional test
//! talks to a real cluster when LARDER_TEST_KUBECONFIG is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use base64::Engine;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use larder::auth::kube::{
    AccessReviewer, Credentials, KubeClient, KubeError, ReviewError, TokenReviewer,
};
use larder::auth::{Request, UserInfo};

const TIMEOUT: Duration = Duration::from_secs(5);
const SA_TOKEN: &str = "larder-own-sa-token";
const USER_TOKEN: &str = "caller-token-7f3a";

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

/// One request the fake API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone)]
struct Fake {
    status: StatusCode,
    body: Arc<Vec<u8>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn answer(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let text = |h| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    fake.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_owned(),
        authorization: text(header::AUTHORIZATION),
        content_type: text(header::CONTENT_TYPE),
        body: body.to_vec(),
    });
    let body = fake.body.as_ref().clone();
    (
        fake.status,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
}

/// A fake API server answering every request with `status` and `body`.
async fn fake_server(status: u16, body: Vec<u8>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        status: StatusCode::from_u16(status).unwrap(),
        body: Arc::new(body),
        seen: seen.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(answer).with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn client(url: &str) -> KubeClient {
    KubeClient::new(url, None, Credentials::Token(SA_TOKEN.into()), TIMEOUT).unwrap()
}

fn only(seen: &Mutex<Vec<Seen>>) -> Seen {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    seen[0].clone()
}

fn alice() -> UserInfo {
    UserInfo {
        name: "system:serviceaccount:kubeflow-alice:default-editor".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:kubeflow-alice".into(),
            "system:authenticated".into(),
        ],
    }
}

fn unavailable(r: Result<impl std::fmt::Debug, ReviewError>) -> String {
    match r {
        Err(ReviewError::Unavailable(why)) => why,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn rejected(r: Result<UserInfo, ReviewError>) -> String {
    match r {
        Err(ReviewError::Rejected(why)) => why,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn authenticated_service_account_becomes_the_user() {
    let (url, seen) = fake_server(201, fixture("tokenreview-authenticated.json")).await;
    let reviewer = TokenReviewer::new(client(&url), vec!["larder".into()]);
    let user = reviewer.review(USER_TOKEN).await.unwrap();
    assert_eq!(user, alice());

    let sent = only(&seen);
    assert_eq!(sent.method, Method::POST);
    assert_eq!(sent.path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(
        sent.authorization.as_deref(),
        Some("Bearer larder-own-sa-token")
    );
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    let raw: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(raw["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(raw["kind"], "TokenReview");
    let review: TokenReview = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(review.spec.token.as_deref(), Some(USER_TOKEN));
    assert_eq!(review.spec.audiences, Some(vec!["larder".to_owned()]));
}

#[tokio::test]
async fn no_audiences_means_the_api_servers_own() {
    let (url, seen) = fake_server(201, fixture("tokenreview-apiserver-audience.json")).await;
    let user = TokenReviewer::new(client(&url), vec![])
        .review(USER_TOKEN)
        .await
        .unwrap();
    assert_eq!(
        user.name,
        "system:serviceaccount:kubeflow-alice:default-editor"
    );
    let raw: serde_json::Value = serde_json::from_slice(&only(&seen).body).unwrap();
    assert!(raw["spec"].get("audiences").is_none(), "{raw}");
}

#[tokio::test]
async fn unauthenticated_token_is_rejected() {
    let (url, _) = fake_server(201, fixture("tokenreview-unauthenticated.json")).await;
    let reviewer = TokenReviewer::new(client(&url), vec!["larder".into()]);
    let why = rejected(reviewer.review(USER_TOKEN).await);
    assert!(why.contains("invalid bearer token"), "{why}");
    assert!(!why.contains(USER_TOKEN), "{why}");
}

#[tokio::test]
async fn audience_mismatch_is_rejected() {
    // The real API server refuses a token for another audience itself.
    let (url, _) = fake_server(201, fixture("tokenreview-wrong-audience.json")).await;
    let reviewer = TokenReviewer::new(client(&url), vec!["larder".into()]);
    let why = rejected(reviewer.review(USER_TOKEN).await);
    assert!(why.contains("is invalid for the target audiences"), "{why}");

    // An authenticator that ignored spec.audiences answers with the API
    // server's audience: larder must not accept that either.
    let (url, _) = fake_server(201, fixture("tokenreview-apiserver-audience.json")).await;
    let reviewer = TokenReviewer::new(client(&url), vec!["larder".into()]);
    let why = rejected(reviewer.review(USER_TOKEN).await);
    assert!(
        why.contains("kubernetes.default.svc.cluster.local"),
        "{why}"
    );
    assert!(why.contains("larder"), "{why}");
}

#[tokio::test]
async fn forbidden_status_is_unavailable_and_says_why() {
    let (url, _) = fake_server(403, fixture("status-forbidden.json")).await;
    let why = unavailable(
        TokenReviewer::new(client(&url), vec![])
            .review(USER_TOKEN)
            .await,
    );
    assert!(why.contains("403"), "{why}");
    assert!(
        why.contains("cannot create resource \"tokenreviews\""),
        "{why}"
    );
    let who = UserInfo {
        name: "bob".into(),
        groups: vec![],
    };
    let req = Request {
        verb: "get",
        api_group: "features.kubeflow.org",
        resource: "featureviews",
        namespace: "x",
        name: "",
    };
    let why = unavailable(AccessReviewer::new(client(&url)).review(&who, &req).await);
    assert!(why.contains("403"), "{why}");
}

#[tokio::test]
async fn server_errors_and_garbage_are_unavailable() {
    let (url, _) = fake_server(500, b"<html>upstream exploded</html>".to_vec()).await;
    let why = unavailable(
        TokenReviewer::new(client(&url), vec![])
            .review(USER_TOKEN)
            .await,
    );
    assert!(why.contains("500"), "{why}");

    let (url, _) = fake_server(201, b"{not json".to_vec()).await;
    let why = unavailable(
        TokenReviewer::new(client(&url), vec![])
            .review(USER_TOKEN)
            .await,
    );
    assert!(why.contains("unparseable"), "{why}");

    // A body that echoes the token but does not parse: the error must not
    // quote it.
    let echo = format!(
        r#"{{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","metadata":{{}},"spec":{{"token":"{USER_TOKEN}"}},"status":{{"authenticated":"{USER_TOKEN}"}}}}"#
    );
    let (url, _) = fake_server(201, echo.into_bytes()).await;
    let why = unavailable(
        TokenReviewer::new(client(&url), vec![])
            .review(USER_TOKEN)
            .await,
    );
    assert!(!why.contains(USER_TOKEN), "{why}");
}

#[tokio::test]
async fn down_or_silent_servers_are_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = client(&format!("http://127.0.0.1:{port}"));
    let why = unavailable(TokenReviewer::new(down, vec![]).review(USER_TOKEN).await);
    assert!(why.contains("connect"), "{why}");

    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let short = Duration::from_millis(300);
    let silent =
        KubeClient::new(&format!("http://{addr}"), None, Credentials::None, short).unwrap();
    let started = Instant::now();
    let why = unavailable(
        TokenReviewer::new(silent.clone(), vec![])
            .review(USER_TOKEN)
            .await,
    );
    assert!(why.contains("timed out"), "{why}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let req = Request {
        verb: "get",
        api_group: "g",
        resource: "r",
        namespace: "",
        name: "",
    };
    unavailable(AccessReviewer::new(silent).review(&alice(), &req).await);
}

#[tokio::test]
async fn token_file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "first-token\n").unwrap();
    let (url, seen) = fake_server(201, fixture("tokenreview-authenticated.json")).await;
    let client =
        KubeClient::new(&url, None, Credentials::TokenFile(path.clone()), TIMEOUT).unwrap();
    let reviewer = TokenReviewer::new(client, vec!["larder".into()]);
    reviewer.review(USER_TOKEN).await.unwrap();

    std::fs::write(&path, "rotated-token\n").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(30))
        .unwrap();
    reviewer.review(USER_TOKEN).await.unwrap();

    let auths: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.authorization.clone())
        .collect();
    assert_eq!(
        auths,
        [
            Some("Bearer first-token".to_owned()),
            Some("Bearer rotated-token".to_owned())
        ]
    );

    let missing = dir.path().join("missing");
    let e = KubeClient::new(&url, None, Credentials::TokenFile(missing), TIMEOUT).unwrap_err();
    assert!(matches!(e, KubeError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("missing"), "{e}");
}

#[tokio::test]
async fn access_review_sends_the_user_and_attributes() {
    let (url, seen) = fake_server(201, fixture("sar-allowed.json")).await;
    let reviewer = AccessReviewer::new(client(&url));
    let req = Request {
        verb: "get",
        api_group: "features.kubeflow.org",
        resource: "featureviews",
        namespace: "kubeflow-alice",
        name: "driver_daily_stats_fv",
    };
    assert!(reviewer.review(&alice(), &req).await.unwrap());

    let sent = only(&seen);
    assert_eq!(sent.method, Method::POST);
    assert_eq!(
        sent.path,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    );
    assert_eq!(
        sent.authorization.as_deref(),
        Some("Bearer larder-own-sa-token")
    );
    let sar: SubjectAccessReview = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sar.spec.user.as_deref(), Some(alice().name.as_str()));
    assert_eq!(sar.spec.groups, Some(alice().groups));
    let attrs = sar.spec.resource_attributes.unwrap();
    assert_eq!(attrs.group.as_deref(), Some("features.kubeflow.org"));
    assert_eq!(attrs.resource.as_deref(), Some("featureviews"));
    assert_eq!(attrs.namespace.as_deref(), Some("kubeflow-alice"));
    assert_eq!(attrs.name.as_deref(), Some("driver_daily_stats_fv"));
    assert_eq!(attrs.verb.as_deref(), Some("get"));
    assert!(sar.spec.non_resource_attributes.is_none());
}

#[tokio::test]
async fn denied_and_no_opinion_are_false() {
    let bob = UserInfo {
        name: "bob@example.com".into(),
        groups: vec!["system:authenticated".into()],
    };
    let (url, _) = fake_server(201, fixture("sar-denied.json")).await;
    let req = Request {
        verb: "delete",
        api_group: "features.kubeflow.org",
        resource: "featureviews",
        namespace: "kubeflow-alice",
        name: "driver_daily_stats_fv",
    };
    assert!(
        !AccessReviewer::new(client(&url))
            .review(&bob, &req)
            .await
            .unwrap()
    );

    // Cluster-scoped list: no namespace and no name are sent at all.
    let (url, seen) = fake_server(201, fixture("sar-no-opinion.json")).await;
    let req = Request {
        verb: "list",
        api_group: "features.kubeflow.org",
        resource: "featureviews",
        namespace: "",
        name: "",
    };
    assert!(
        !AccessReviewer::new(client(&url))
            .review(&bob, &req)
            .await
            .unwrap()
    );
    let raw: serde_json::Value = serde_json::from_slice(&only(&seen).body).unwrap();
    let attrs = raw["spec"]["resourceAttributes"].as_object().unwrap();
    assert!(!attrs.contains_key("namespace"), "{raw}");
    assert!(!attrs.contains_key("name"), "{raw}");
    assert_eq!(attrs["verb"], "list");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A kubeconfig with a token user (current) and a tokenFile user.
fn write_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let ca = b64(&fixture("ca.crt"));
    std::fs::write(dir.join("other-token"), "token-from-file\n").unwrap();
    let text = format!(
        r#"apiVersion: v1
kind: Config
current-context: dev
clusters:
  - name: fake
    cluster:
      server: {server}
      certificate-authority-data: {ca}
contexts:
  - name: dev
    context: {{ cluster: fake, user: dev-user, namespace: team-a }}
  - name: other
    context: {{ cluster: fake, user: file-user }}
users:
  - name: dev-user
    user:
      token: kubeconfig-token
  - name: file-user
    user:
      tokenFile: other-token
"#
    );
    let path = dir.join("config");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn kubeconfig_token_users_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = fake_server(201, fixture("sar-allowed.json")).await;
    let path = write_kubeconfig(dir.path(), &url);
    let req = Request {
        verb: "get",
        api_group: "g",
        resource: "r",
        namespace: "n",
        name: "",
    };
    for context in [None, Some("other")] {
        let client = KubeClient::from_kubeconfig(Some(&path), context, TIMEOUT).unwrap();
        assert!(
            AccessReviewer::new(client)
                .review(&alice(), &req)
                .await
                .unwrap()
        );
    }
    let auths: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.authorization.clone())
        .collect();
    assert_eq!(
        auths,
        [
            Some("Bearer kubeconfig-token".to_owned()),
            Some("Bearer token-from-file".to_owned())
        ]
    );
}

#[test]
fn kubeconfig_client_certificate_files_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca.crt", "client.crt", "client.key"] {
        std::fs::copy(fixture_path(f), dir.path().join(f)).unwrap();
    }
    let config = |user: &str| {
        let path = dir.path().join("config");
        let text = format!(
            "current-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: ca.crt\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n{user}"
        );
        std::fs::write(&path, text).unwrap();
        KubeClient::from_kubeconfig(Some(&path), None, TIMEOUT)
    };
    config("    client-certificate: client.crt\n    client-key: client.key\n").unwrap();
    let cert = b64(&fixture("client.crt"));
    let key = b64(&fixture("client.key"));
    config(&format!(
        "    client-certificate-data: {cert}\n    client-key-data: {key}\n"
    ))
    .unwrap();
    let e = config("    client-certificate: client.crt\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("client-key"), "{e}");
    let e = config("    client-certificate: nowhere.crt\n    client-key: client.key\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere.crt"), "{e}");
}

#[test]
fn kubeconfig_refusals_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let load = |cluster: &str, user: &str, context: Option<&str>| {
        let text = format!(
            "current-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster}contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n{user}"
        );
        std::fs::write(&path, text).unwrap();
        KubeClient::from_kubeconfig(Some(&path), context, TIMEOUT)
            .unwrap_err()
            .to_string()
    };
    let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: gke-gcloud-auth-plugin\n";
    let e = load("", exec, None);
    assert!(e.contains("exec") && e.contains("not support"), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
    let e = load("", "    auth-provider:\n      name: oidc\n", None);
    assert!(e.contains("auth-provider"), "{e}");
    let e = load("", "    token: t\n", Some("staging"));
    assert!(e.contains("\"staging\""), "{e}");
    let e = load(
        "    insecure-skip-tls-verify: true\n",
        "    token: t\n",
        None,
    );
    assert!(e.contains("insecure-skip-tls-verify"), "{e}");
    let e = load(
        "    certificate-authority-data: '%%%'\n",
        "    token: t\n",
        None,
    );
    assert!(e.contains("certificate-authority-data"), "{e}");
    let e = KubeClient::from_kubeconfig(Some(&dir.path().join("absent")), None, TIMEOUT)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent"), "{e}");
}

/// Optional: a real cluster, with LARDER_TEST_KUBECONFIG naming a
/// kubeconfig whose user may create SubjectAccessReviews.
#[test]
fn real_cluster_subject_access_review() {
    let Some(path) = std::env::var_os("LARDER_TEST_KUBECONFIG") else {
        println!("skipped: set LARDER_TEST_KUBECONFIG to run against a real cluster");
        return;
    };
    let client = KubeClient::from_kubeconfig(Some(Path::new(&path)), None, TIMEOUT).unwrap();
    let reviewer = AccessReviewer::new(client);
    let req = Request {
        verb: "get",
        api_group: "features.kubeflow.org",
        resource: "featureviews",
        namespace: "default",
        name: "",
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = UserInfo {
        name: "larder-test".into(),
        groups: vec!["system:masters".into()],
    };
    assert!(rt.block_on(reviewer.review(&admin, &req)).unwrap());
    let nobody = UserInfo {
        name: "larder-test-nobody".into(),
        groups: vec![],
    };
    assert!(!rt.block_on(reviewer.review(&nobody, &req)).unwrap());
}
