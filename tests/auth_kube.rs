//! TokenReview and SubjectAccessReview against a fake API server that
//! answers with recorded API server responses (tests/fixtures/kube/) and
//! records what larder sent, plus kubeconfig loading. One optional test
//! talks to a real cluster when LARDER_TEST_KUBECONFIG is set.

use std::collections::HashMap;
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
use larder::auth::{Auth, AuthError, Caller, Request, UserInfo};
use larder::config::{AuthConfig, AuthenticationMode, AuthorizationMode};

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

/// What the fake API server answers, after `delay`.
#[derive(Clone)]
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    delay: Duration,
}

impl Reply {
    fn new(status: u16, body: Vec<u8>) -> Self {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body,
            delay: Duration::ZERO,
        }
    }
}

/// The fake API server's answers: by request path, else `any`. They may be
/// changed while it runs.
struct Replies {
    any: Reply,
    by_path: HashMap<&'static str, Reply>,
}

#[derive(Clone)]
struct Fake {
    replies: Arc<Mutex<Replies>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn new(any: Reply) -> Self {
        Fake {
            replies: Arc::new(Mutex::new(Replies {
                any,
                by_path: HashMap::new(),
            })),
            seen: Arc::default(),
        }
    }

    /// Answers POSTs to `path` with `status` and `body` from now on.
    fn reply(&self, path: &'static str, status: u16, body: Vec<u8>) {
        let reply = Reply::new(status, body);
        self.replies.lock().unwrap().by_path.insert(path, reply);
    }

    /// Waits `delay` before answering on `path` (set its reply first).
    fn delay(&self, path: &'static str, delay: Duration) {
        let mut replies = self.replies.lock().unwrap();
        replies.by_path.get_mut(path).unwrap().delay = delay;
    }

    /// The requests received on `path`.
    fn hits(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }

    /// Serves on `listener`; the server's URL.
    fn serve(&self, listener: tokio::net::TcpListener) -> String {
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(answer).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }
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
    let reply = {
        let replies = fake.replies.lock().unwrap();
        let path = uri.path();
        replies.by_path.get(path).unwrap_or(&replies.any).clone()
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    (
        reply.status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
}

/// A fake API server answering every request with `status` and `body`.
async fn fake_server(status: u16, body: Vec<u8>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let fake = Fake::new(Reply::new(status, body));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (fake.serve(listener), fake.seen.clone())
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

// `Auth` in the `kubernetes` modes, built from a kubeconfig that points at
// a fake API server: its caches, and how it fails closed.

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const OTHER_TOKEN: &str = "second-caller-token-91c2";
/// Every bearer token these tests send; none may show in an error.
const CALLER_TOKENS: [&str; 2] = [USER_TOKEN, OTHER_TOKEN];

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A fake API server with no answers yet (404 everywhere), its kubeconfig
/// (token user `kubeconfig-token`) and the temp dir holding it.
async fn fake_cluster() -> (Fake, PathBuf, tempfile::TempDir) {
    let fake = Fake::new(Reply::new(404, b"{}".to_vec()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = fake.serve(listener);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &url);
    (fake, kubeconfig, dir)
}

/// TokenReview and SubjectAccessReview through `kubeconfig`; long TTLs.
fn kube_config(kubeconfig: &Path) -> AuthConfig {
    AuthConfig {
        authentication: AuthenticationMode::Kubernetes,
        authorization: AuthorizationMode::Kubernetes,
        audiences: vec!["larder".into()],
        kubeconfig: Some(kubeconfig.to_owned()),
        identity_ttl: Duration::from_secs(60),
        allow_ttl: Duration::from_secs(60),
        deny_ttl: Duration::from_secs(60),
        timeout: TIMEOUT,
        ..AuthConfig::default()
    }
}

/// The error's text, after checking that it shows no caller's token.
fn shown(e: &AuthError) -> String {
    let text = e.to_string();
    let debug = format!("{e:?}");
    for token in CALLER_TOKENS {
        assert!(!text.contains(token), "the token leaks: {text}");
        assert!(!debug.contains(token), "the token leaks: {debug}");
    }
    text
}

fn unauthenticated<T: std::fmt::Debug>(r: Result<T, AuthError>) -> String {
    match r {
        Err(e @ AuthError::Unauthenticated(_)) => shown(&e),
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
}

fn auth_unavailable<T: std::fmt::Debug>(r: Result<T, AuthError>) -> String {
    match r {
        Err(e @ AuthError::Unavailable(_)) => shown(&e),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The token the TokenReview `seen` asked about.
fn reviewed_token(seen: &Seen) -> String {
    let review: TokenReview = serde_json::from_slice(&seen.body).unwrap();
    review.spec.token.unwrap()
}

/// Alice, authenticated by a fresh TokenReview.
async fn caller(auth: &Auth, fake: &Fake) -> Caller {
    fake.reply(
        TOKEN_REVIEWS,
        201,
        fixture("tokenreview-authenticated.json"),
    );
    let caller = auth.authenticate(Some(&bearer(USER_TOKEN))).await.unwrap();
    assert_eq!(*caller, alice());
    caller
}

#[tokio::test]
async fn kube_auth_remembers_reviewed_identities() {
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    fake.reply(
        TOKEN_REVIEWS,
        201,
        fixture("tokenreview-authenticated.json"),
    );
    let auth = Auth::from_config(&kube_config(&kubeconfig)).await.unwrap();
    assert!(!auth.is_disabled());

    let first = auth.authenticate(Some(&bearer(USER_TOKEN))).await.unwrap();
    assert_eq!(*first, alice());
    let hits = fake.hits(TOKEN_REVIEWS);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        hits[0].authorization.as_deref(),
        Some("Bearer kubeconfig-token")
    );
    assert_eq!(reviewed_token(&hits[0]), USER_TOKEN);
    let review: TokenReview = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(review.spec.audiences, Some(vec!["larder".to_owned()]));

    // Within identity_ttl: from the cache, whatever the server would say.
    fake.reply(TOKEN_REVIEWS, 500, b"{}".to_vec());
    let again = auth.authenticate(Some(&bearer(USER_TOKEN))).await.unwrap();
    assert_eq!(*again, alice());
    assert_eq!(fake.hits(TOKEN_REVIEWS).len(), 1);

    // Another token is reviewed on its own.
    fake.reply(
        TOKEN_REVIEWS,
        201,
        fixture("tokenreview-authenticated.json"),
    );
    auth.authenticate(Some(&bearer(OTHER_TOKEN))).await.unwrap();
    let hits = fake.hits(TOKEN_REVIEWS);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(reviewed_token(&hits[1]), OTHER_TOKEN);

    // Malformed headers never reach the API server.
    unauthenticated(auth.authenticate(None).await);
    unauthenticated(auth.authenticate(Some("Basic dXNlcjpwdw==")).await);
    assert_eq!(fake.hits(TOKEN_REVIEWS).len(), 2);
}

#[tokio::test]
async fn kube_auth_forgets_identities_after_identity_ttl() {
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    fake.reply(
        TOKEN_REVIEWS,
        201,
        fixture("tokenreview-authenticated.json"),
    );
    let config = AuthConfig {
        identity_ttl: Duration::from_millis(200),
        kube_context: Some("other".into()),
        ..kube_config(&kubeconfig)
    };
    let auth = Auth::from_config(&config).await.unwrap();
    auth.authenticate(Some(&bearer(USER_TOKEN))).await.unwrap();
    auth.authenticate(Some(&bearer(USER_TOKEN))).await.unwrap();
    assert_eq!(fake.hits(TOKEN_REVIEWS).len(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    auth.authenticate(Some(&bearer(USER_TOKEN))).await.unwrap();
    let hits = fake.hits(TOKEN_REVIEWS);
    assert_eq!(hits.len(), 2, "{hits:?}");
    // kube_context picks the kubeconfig's other user.
    assert_eq!(
        hits[1].authorization.as_deref(),
        Some("Bearer token-from-file")
    );
}

#[tokio::test]
async fn kube_auth_refuses_unauthenticated_tokens() {
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    fake.reply(
        TOKEN_REVIEWS,
        201,
        fixture("tokenreview-unauthenticated.json"),
    );
    let auth = Auth::from_config(&kube_config(&kubeconfig)).await.unwrap();
    let why = unauthenticated(auth.authenticate(Some(&bearer(USER_TOKEN))).await);
    assert!(why.contains("invalid bearer token"), "{why}");

    fake.reply(
        TOKEN_REVIEWS,
        201,
        fixture("tokenreview-wrong-audience.json"),
    );
    let why = unauthenticated(auth.authenticate(Some(&bearer(USER_TOKEN))).await);
    assert!(why.contains("target audiences"), "{why}");
    assert_eq!(fake.hits(TOKEN_REVIEWS).len(), 2);
}

#[tokio::test]
async fn kube_auth_fails_closed_and_does_not_remember_failures() {
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    let auth = Auth::from_config(&kube_config(&kubeconfig)).await.unwrap();
    let header = bearer(USER_TOKEN);

    fake.reply(TOKEN_REVIEWS, 403, fixture("status-forbidden.json"));
    let why = auth_unavailable(auth.authenticate(Some(&header)).await);
    assert!(why.contains("403"), "{why}");
    assert!(why.contains("cannot create resource"), "{why}");
    auth_unavailable(auth.authenticate(Some(&header)).await);
    assert_eq!(fake.hits(TOKEN_REVIEWS).len(), 2);

    fake.reply(
        TOKEN_REVIEWS,
        500,
        b"<html>upstream exploded</html>".to_vec(),
    );
    let why = auth_unavailable(auth.authenticate(Some(&header)).await);
    assert!(why.contains("500"), "{why}");
    assert_eq!(fake.hits(TOKEN_REVIEWS).len(), 3);

    // The API server recovers: the token is reviewed again and accepted.
    fake.reply(
        TOKEN_REVIEWS,
        201,
        fixture("tokenreview-authenticated.json"),
    );
    let user = auth.authenticate(Some(&header)).await.unwrap();
    assert_eq!(*user, alice());
    assert_eq!(fake.hits(TOKEN_REVIEWS).len(), 4);

    // The same for SubjectAccessReviews: an error is no decision, neither
    // cached nor an allow.
    fake.reply(ACCESS_REVIEWS, 403, fixture("status-forbidden.json"));
    let ask = || auth.allowed(&user, "get", "featureviews", "kubeflow-alice", "fv");
    let why = auth_unavailable(ask().await);
    assert!(why.contains("403"), "{why}");
    fake.reply(ACCESS_REVIEWS, 500, b"oops".to_vec());
    let why = auth_unavailable(ask().await);
    assert!(why.contains("500"), "{why}");
    let why = auth_unavailable(
        auth.authorize(&user, "get", "featureviews", "kubeflow-alice", "fv")
            .await,
    );
    assert!(why.contains("500"), "{why}");
    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-allowed.json"));
    assert!(ask().await.unwrap());
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 4);
}

#[tokio::test]
async fn kube_auth_with_the_api_server_down_fails_closed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &format!("http://{addr}"));
    let auth = Auth::from_config(&kube_config(&kubeconfig)).await.unwrap();
    let header = bearer(USER_TOKEN);
    let why = auth_unavailable(auth.authenticate(Some(&header)).await);
    assert!(why.contains("connect"), "{why}");

    // The server comes up on that address: the failure was not remembered.
    let fake = Fake::new(Reply::new(404, b"{}".to_vec()));
    fake.reply(
        TOKEN_REVIEWS,
        201,
        fixture("tokenreview-authenticated.json"),
    );
    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-allowed.json"));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    fake.serve(listener);
    let user = auth.authenticate(Some(&header)).await.unwrap();
    assert_eq!(*user, alice());
    assert_eq!(fake.hits(TOKEN_REVIEWS).len(), 1);
    assert!(
        auth.allowed(&user, "list", "entities", "kubeflow-alice", "")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn kube_auth_remembers_allows() {
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    let auth = Auth::from_config(&kube_config(&kubeconfig)).await.unwrap();
    let user = caller(&auth, &fake).await;
    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-allowed.json"));
    let (ns, name) = ("kubeflow-alice", "driver_daily_stats_fv");
    assert!(
        auth.allowed(&user, "get", "featureviews", ns, name)
            .await
            .unwrap()
    );
    let hits = fake.hits(ACCESS_REVIEWS);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        hits[0].authorization.as_deref(),
        Some("Bearer kubeconfig-token")
    );
    let sar: SubjectAccessReview = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(sar.spec.user.as_deref(), Some(alice().name.as_str()));
    assert_eq!(sar.spec.groups, Some(alice().groups));
    let attrs = sar.spec.resource_attributes.unwrap();
    assert_eq!(attrs.group.as_deref(), Some("features.kubeflow.org"));
    assert_eq!(attrs.verb.as_deref(), Some("get"));
    assert_eq!(attrs.resource.as_deref(), Some("featureviews"));
    assert_eq!(attrs.namespace.as_deref(), Some(ns));
    assert_eq!(attrs.name.as_deref(), Some(name));

    // The same question again: from the cache, whatever the server says now.
    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-denied.json"));
    assert!(
        auth.allowed(&user, "get", "featureviews", ns, name)
            .await
            .unwrap()
    );
    auth.authorize(&user, "get", "featureviews", ns, name)
        .await
        .unwrap();
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 1);

    // Another object, verb or namespace is another question.
    assert!(
        !auth
            .allowed(&user, "get", "featureviews", ns, "other_fv")
            .await
            .unwrap()
    );
    assert!(
        !auth
            .allowed(&user, "delete", "featureviews", ns, name)
            .await
            .unwrap()
    );
    assert!(
        !auth
            .allowed(&user, "get", "featureviews", "kubeflow-bob", name)
            .await
            .unwrap()
    );
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 4);
}

#[tokio::test]
async fn kube_auth_remembers_denials_for_deny_ttl() {
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    let config = AuthConfig {
        deny_ttl: Duration::from_millis(200),
        ..kube_config(&kubeconfig)
    };
    let auth = Auth::from_config(&config).await.unwrap();
    let user = caller(&auth, &fake).await;
    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-denied.json"));
    let ask = || auth.allowed(&user, "delete", "featureviews", "kubeflow-alice", "fv");
    assert!(!ask().await.unwrap());
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 1);

    // Within deny_ttl: still denied from the cache, even once the API
    // server would allow.
    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-allowed.json"));
    assert!(!ask().await.unwrap());
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 1);

    // After deny_ttl the question is asked again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(ask().await.unwrap());
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 2);
}

#[tokio::test]
async fn kube_auth_slow_reviews_fail_closed_within_the_timeout() {
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    let config = AuthConfig {
        timeout: Duration::from_millis(200),
        ..kube_config(&kubeconfig)
    };
    let auth = Auth::from_config(&config).await.unwrap();
    let user = caller(&auth, &fake).await;

    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-allowed.json"));
    fake.delay(ACCESS_REVIEWS, Duration::from_secs(2));
    let ask = || auth.allowed(&user, "get", "featureviews", "kubeflow-alice", "fv");
    let started = Instant::now();
    auth_unavailable(ask().await);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 1);

    // Not remembered: once the server is quick again, it is asked again.
    fake.delay(ACCESS_REVIEWS, Duration::ZERO);
    assert!(ask().await.unwrap());
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 2);

    // A slow TokenReview likewise.
    fake.delay(TOKEN_REVIEWS, Duration::from_secs(2));
    let started = Instant::now();
    auth_unavailable(auth.authenticate(Some(&bearer(OTHER_TOKEN))).await);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test]
async fn kube_auth_denial_is_forbidden_naming_user_and_object() {
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    let auth = Auth::from_config(&kube_config(&kubeconfig)).await.unwrap();
    let user = caller(&auth, &fake).await;
    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-denied.json"));
    let (ns, name) = ("kubeflow-alice", "driver_daily_stats_fv");
    let e = auth
        .authorize(&user, "delete", "featureviews", ns, name)
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Forbidden(_)), "{e:?}");
    let why = shown(&e);
    for part in [alice().name.as_str(), "delete", "featureviews", name, ns] {
        assert!(why.contains(part), "{part:?} missing: {why}");
    }

    // A list (no name) names the resource.
    let e = auth
        .authorize(&user, "list", "featureviews", ns, "")
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Forbidden(_)), "{e:?}");
    let why = shown(&e);
    for part in [alice().name.as_str(), "list", "featureviews", ns] {
        assert!(why.contains(part), "{part:?} missing: {why}");
    }

    fake.reply(ACCESS_REVIEWS, 201, fixture("sar-allowed.json"));
    auth.authorize(&user, "get", "featureviews", ns, name)
        .await
        .unwrap();
    assert_eq!(fake.hits(ACCESS_REVIEWS).len(), 3);
}

#[tokio::test]
async fn kube_auth_errors_never_show_a_token_echoed_by_the_review() {
    // An authenticator (a webhook behind the API server, say) whose error
    // repeats the token it was given.
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    let auth = Auth::from_config(&kube_config(&kubeconfig)).await.unwrap();
    let header = bearer(USER_TOKEN);
    let echo = format!(
        r#"{{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{{"authenticated":false,"error":"token {USER_TOKEN} not found"}}}}"#
    );
    fake.reply(TOKEN_REVIEWS, 201, echo.into_bytes());
    unauthenticated(auth.authenticate(Some(&header)).await);
}

#[tokio::test]
async fn kube_auth_errors_never_show_a_token_echoed_in_a_status() {
    // An API server (or a proxy in front of it) whose failure message
    // repeats the token.
    let (fake, kubeconfig, _dir) = fake_cluster().await;
    let auth = Auth::from_config(&kube_config(&kubeconfig)).await.unwrap();
    let header = bearer(USER_TOKEN);
    let status = format!(
        r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","message":"webhook refused token {USER_TOKEN}","code":500}}"#
    );
    fake.reply(TOKEN_REVIEWS, 500, status.into_bytes());
    auth_unavailable(auth.authenticate(Some(&header)).await);
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
