//! Asking the Kubernetes API server who a bearer token belongs to
//! (TokenReview) and whether a user may do something (SubjectAccessReview).
//!
//! [`KubeClient`] is the connection: the server's address, the CA that
//! signs its certificate and larder's own credentials, found in the pod
//! ([`KubeClient::in_cluster`]) or in a kubeconfig
//! ([`KubeClient::from_kubeconfig`]). Tokens never appear in errors or logs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::rbac::{Request, UserInfo};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
/// A token file is re-read when it changes, and at least this often.
const TOKEN_FILE_TTL: Duration = Duration::from_secs(60);

/// Why a client could not be set up. Messages name the file, variable or
/// kubeconfig key at fault, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubeconfig {}: {message}", path.display())]
    Kubeconfig { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("cannot build the API server client: {0}")]
    Client(String),
}

impl KubeError {
    fn at(path: &Path, message: String) -> Self {
        let path = path.to_owned();
        Self::Kubeconfig { path, message }
    }
}

/// Why a review gave no answer. `Rejected`: the API server looked at the
/// token and refused it. `Unavailable`: no usable answer came back.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("rejected by the API server: {0}")]
    Rejected(String),
    #[error("the API server is unavailable: {0}")]
    Unavailable(String),
}

/// What larder presents to the API server.
#[derive(Clone)]
pub enum Credentials {
    None,
    Token(String),
    /// Re-read when the file changes, and at least every minute.
    TokenFile(PathBuf),
    ClientCert {
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
    },
}

/// How to reach the API server.
#[derive(Clone)]
pub struct KubeClient {
    http: reqwest::Client,
    base_url: String,
    bearer: Bearer,
}

#[derive(Clone)]
enum Bearer {
    None,
    Static(String),
    File(Arc<TokenFile>),
}

struct TokenFile {
    path: PathBuf,
    /// The token, when it was read and the file's mtime then.
    cached: Mutex<(String, Instant, Option<SystemTime>)>,
}

impl TokenFile {
    fn load(path: &Path) -> Result<(String, Instant, Option<SystemTime>), KubeError> {
        let read_err = |source| KubeError::Read {
            path: path.to_owned(),
            source,
        };
        let mtime = std::fs::metadata(path).map_err(read_err)?.modified().ok();
        let token = std::fs::read_to_string(path)
            .map_err(read_err)?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(KubeError::Config(format!(
                "token file {} is empty",
                path.display()
            )));
        }
        Ok((token, Instant::now(), mtime))
    }

    fn token(&self) -> Result<String, KubeError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let mtime = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| m.modified().ok());
        if cached.1.elapsed() >= TOKEN_FILE_TTL || mtime != cached.2 {
            *cached = Self::load(&self.path)?;
        }
        Ok(cached.0.clone())
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            Self::ClientCert { .. } => f.write_str("ClientCert { <redacted> }"),
        }
    }
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client for the API server at `base_url` (`https://…`, or `http://…`
    /// for tests), trusting `ca_pem` (there are no built-in roots).
    pub fn new(
        base_url: &str,
        ca_pem: Option<&[u8]>,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self, KubeError> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| KubeError::Config(format!("API server URL {base_url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(KubeError::Config(format!(
                "API server URL {base_url:?} must be http(s)://HOST[:PORT]"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .tls_built_in_root_certs(false);
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| builder_error("CA bundle", e))?;
            if certs.is_empty() {
                return Err(KubeError::Client(
                    "the CA bundle holds no certificate".into(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let bearer = match credentials {
            Credentials::None => Bearer::None,
            Credentials::Token(t) => Bearer::Static(t),
            Credentials::TokenFile(path) => {
                let cached = Mutex::new(TokenFile::load(&path)?);
                Bearer::File(Arc::new(TokenFile { path, cached }))
            }
            Credentials::ClientCert { cert_pem, key_pem } => {
                let pem = [cert_pem.as_slice(), b"\n", key_pem.as_slice()].concat();
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| builder_error("client certificate or key", e))?;
                builder = builder.identity(identity);
                Bearer::None
            }
        };
        let http = builder
            .build()
            .map_err(|e| builder_error("TLS settings", e))?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        Ok(Self {
            http,
            base_url,
            bearer,
        })
    }

    /// In a pod: `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted
    /// service-account token and CA.
    pub fn in_cluster(timeout: Duration) -> Result<Self, KubeError> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| KubeError::Config(format!("{name} is not set: not in a pod?")))
        };
        let (host, port) = (
            var("KUBERNETES_SERVICE_HOST")?,
            var("KUBERNETES_SERVICE_PORT")?,
        );
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let dir = Path::new(SA_DIR);
        let ca = read(&dir.join("ca.crt"))?;
        let credentials = Credentials::TokenFile(dir.join("token"));
        Self::new(
            &format!("https://{host}:{port}"),
            Some(&ca),
            credentials,
            timeout,
        )
    }

    /// From a kubeconfig: `path`, else every file in `$KUBECONFIG` (merged,
    /// first wins), else `~/.kube/config`; `context`, else current-context.
    pub fn from_kubeconfig(
        path: Option<&Path>,
        context: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, KubeError> {
        let files = load_kubeconfigs(path)?;
        let first = files[0].0.as_path();
        let current = files.iter().find_map(|(_, k)| k.current_context.as_deref());
        let name = context
            .or(current.filter(|c| !c.is_empty()))
            .ok_or_else(|| {
                KubeError::at(first, "no current-context, and no context was given".into())
            })?;
        let missing = |what: &str, entry: &str| {
            KubeError::at(
                first,
                format!("{what} {entry:?} (context {name:?}) is not defined"),
            )
        };
        let (_, ctx) =
            find(&files, |k| &k.contexts, name).ok_or_else(|| missing("context", name))?;
        let (cpath, cluster) = find(&files, |k| &k.clusters, &ctx.cluster)
            .ok_or_else(|| missing("cluster", &ctx.cluster))?;
        let refuse = |m: &str| {
            Err(KubeError::at(
                cpath,
                format!("cluster {:?}: {m}", ctx.cluster),
            ))
        };
        if cluster.insecure_skip_tls_verify {
            return refuse(
                "insecure-skip-tls-verify is refused; give certificate-authority(-data)",
            );
        }
        if cluster.tls_server_name.is_some() {
            return refuse("tls-server-name is not supported");
        }
        let (ca, ca_data) = (
            &cluster.certificate_authority,
            &cluster.certificate_authority_data,
        );
        let ca = pem_field(cpath, "certificate-authority", ca, ca_data)?;
        let credentials = match ctx.user.as_str() {
            "" => Credentials::None,
            user => {
                let (upath, u) =
                    find(&files, |k| &k.users, user).ok_or_else(|| missing("user", user))?;
                u.credentials(upath, user)?
            }
        };
        Self::new(&cluster.server, ca.as_deref(), credentials, timeout)
            .map_err(|e| KubeError::at(cpath, format!("cluster {:?}: {e}", ctx.cluster)))
    }

    /// [`in_cluster`](Self::in_cluster) when `KUBERNETES_SERVICE_HOST` is
    /// set, else the default kubeconfig.
    pub fn infer(timeout: Duration) -> Result<Self, KubeError> {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty()) {
            Self::in_cluster(timeout)
        } else {
            Self::from_kubeconfig(None, None, timeout)
        }
    }

    /// POSTs `body` to `path` and decodes a 2xx answer as `T`.
    async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ReviewError> {
        let unavailable = ReviewError::Unavailable;
        let mut req = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(body);
        match &self.bearer {
            Bearer::None => {}
            Bearer::Static(t) => req = req.bearer_auth(t),
            Bearer::File(f) => {
                req = req.bearer_auth(f.token().map_err(|e| unavailable(e.to_string()))?)
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| unavailable(transport_error(&e)))?;
        let code = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| unavailable(transport_error(&e)))?;
        if !code.is_success() {
            let message = serde_json::from_slice::<Status>(&bytes)
                .ok()
                .and_then(|s| s.message)
                .map(|m| format!(": {}", m.chars().take(300).collect::<String>()))
                .unwrap_or_default();
            return Err(unavailable(format!(
                "POST {path} answered HTTP {code}{message}"
            )));
        }
        // serde's message could quote the body (which echoes the token), so
        // only the position is kept.
        serde_json::from_slice(&bytes).map_err(|e| {
            unavailable(format!(
                "POST {path}: unparseable answer ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// A transport error, its innermost cause (never the request or its URL).
fn transport_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = None;
    while let Some(s) = source {
        detail = Some(s);
        source = s.source();
    }
    match detail {
        Some(d) => format!("{what}: {d}"),
        None => what.to_owned(),
    }
}

/// A reqwest builder error with its causes ("builder error" alone says
/// nothing).
fn builder_error(context: &str, e: reqwest::Error) -> KubeError {
    let mut text = format!("{context}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    KubeError::Client(text)
}

/// Authentication by TokenReview.
#[derive(Debug, Clone)]
pub struct TokenReviewer {
    client: KubeClient,
    audiences: Vec<String>,
}

impl TokenReviewer {
    /// `audiences`: what tokens must be meant for; empty = the API server's own.
    pub fn new(client: KubeClient, audiences: Vec<String>) -> Self {
        Self { client, audiences }
    }

    /// Who `token` belongs to, as the API server sees it.
    pub async fn review(&self, token: &str) -> Result<UserInfo, ReviewError> {
        let body = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer: TokenReview = self.client.post(TOKEN_REVIEWS, &body).await?;
        let status = answer.status.unwrap_or_default();
        let error = status.error.filter(|e| !e.is_empty());
        if status.authenticated != Some(true) || error.is_some() {
            let why = error.unwrap_or_else(|| "the token is not authenticated".into());
            return Err(ReviewError::Rejected(why.chars().take(300).collect()));
        }
        let user = status.user.unwrap_or_default();
        let name = user.username.filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| ReviewError::Rejected("the review names no user".into()))?;
        if !self.audiences.is_empty() {
            let got = status.audiences.unwrap_or_default();
            if !got.iter().any(|a| self.audiences.contains(a)) {
                return Err(ReviewError::Rejected(format!(
                    "the token is for audiences {got:?}, not {:?}",
                    self.audiences
                )));
            }
        }
        Ok(UserInfo {
            name,
            groups: user.groups.unwrap_or_default(),
        })
    }
}

/// Authorization by SubjectAccessReview.
#[derive(Debug, Clone)]
pub struct AccessReviewer {
    client: KubeClient,
}

impl AccessReviewer {
    pub fn new(client: KubeClient) -> Self {
        Self { client }
    }

    /// Whether the API server allows `user` to do `request`. Any failure is
    /// `Unavailable`; callers fail closed.
    pub async fn review(
        &self,
        user: &UserInfo,
        request: &Request<'_>,
    ) -> Result<bool, ReviewError> {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let body = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(request.api_group.to_owned()),
                    resource: Some(request.resource.to_owned()),
                    namespace: some(request.namespace),
                    name: some(request.name),
                    verb: Some(request.verb.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer: SubjectAccessReview = self.client.post(ACCESS_REVIEWS, &body).await?;
        let status = answer.status.unwrap_or_default();
        Ok(status.allowed && status.denied != Some(true))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KubeError> {
    std::fs::read(path).map_err(|source| KubeError::Read {
        path: path.to_owned(),
        source,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
}

/// A kubeconfig list entry: `{name, cluster|user|context: {...}}`.
#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    exec: Option<serde_yaml::Value>,
    auth_provider: Option<serde_yaml::Value>,
    username: Option<String>,
    password: Option<String>,
}

impl User {
    /// `file` is where this user is defined; relative paths start there.
    fn credentials(&self, file: &Path, name: &str) -> Result<Credentials, KubeError> {
        let refuse = |m: String| Err(KubeError::at(file, format!("user {name:?}: {m}")));
        let plugin = [
            ("exec", self.exec.is_some()),
            ("auth-provider", self.auth_provider.is_some()),
        ];
        if let Some((what, _)) = plugin.iter().find(|(_, set)| *set) {
            return refuse(format!(
                "{what} credential plugins are not supported; use token, tokenFile or client-certificate/client-key"
            ));
        }
        if self.username.is_some() || self.password.is_some() {
            return refuse("username/password is not supported".into());
        }
        let cert = pem_field(
            file,
            "client-certificate",
            &self.client_certificate,
            &self.client_certificate_data,
        )?;
        let key = pem_field(file, "client-key", &self.client_key, &self.client_key_data)?;
        Ok(match (&self.token, &self.token_file, cert, key) {
            (Some(t), _, _, _) => Credentials::Token(t.clone()),
            (None, Some(f), _, _) => {
                Credentials::TokenFile(file.parent().unwrap_or(Path::new(".")).join(f))
            }
            (None, None, Some(cert_pem), Some(key_pem)) => {
                Credentials::ClientCert { cert_pem, key_pem }
            }
            (None, None, None, None) => Credentials::None,
            _ => return refuse("client-certificate and client-key go together".into()),
        })
    }
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

fn load_kubeconfigs(path: Option<&Path>) -> Result<Vec<(PathBuf, Kubeconfig)>, KubeError> {
    let paths: Vec<PathBuf> = match (path, std::env::var_os("KUBECONFIG")) {
        (Some(p), _) => vec![p.to_owned()],
        (None, Some(list)) if !list.is_empty() => std::env::split_paths(&list)
            .filter(|p| p.is_file())
            .collect(),
        (None, _) => match std::env::var_os("HOME") {
            Some(home) => vec![Path::new(&home).join(".kube/config")],
            None => vec![],
        },
    };
    if paths.is_empty() {
        return Err(KubeError::Config(
            "no kubeconfig: give a path, set KUBECONFIG or create ~/.kube/config".into(),
        ));
    }
    paths
        .into_iter()
        .map(|p| {
            let text = read(&p)?;
            let parsed =
                serde_yaml::from_slice(&text).map_err(|e| KubeError::at(&p, e.to_string()))?;
            Ok((p, parsed))
        })
        .collect()
}

/// The first entry called `name` across the files, with its file.
fn find<'a, T>(
    files: &'a [(PathBuf, Kubeconfig)],
    list: impl Fn(&Kubeconfig) -> &Vec<Named<T>>,
    name: &str,
) -> Option<(&'a Path, &'a T)> {
    files.iter().find_map(|(p, k)| {
        list(k)
            .iter()
            .find(|n| n.name == name)
            .map(|n| (p.as_path(), &n.value))
    })
}

/// A PEM from `KEY-data` (base64) or `KEY` (a path relative to `file`).
fn pem_field(
    file: &Path,
    key: &str,
    path: &Option<String>,
    data: &Option<String>,
) -> Result<Option<Vec<u8>>, KubeError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match (data, path) {
        (Some(d), _) => b64
            .decode(d.trim())
            .map(Some)
            .map_err(|e| KubeError::at(file, format!("{key}-data is not base64: {e}"))),
        (None, Some(p)) => read(&file.parent().unwrap_or(Path::new(".")).join(p)).map(Some),
        (None, None) => Ok(None),
    }
}
