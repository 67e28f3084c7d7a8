//! Authentication and authorization for both servers.
//!
//! Every protected request carries a bearer token (HTTP `Authorization`,
//! gRPC `authorization` metadata). An [`Authenticator`] turns it into a
//! Kubernetes user ([`UserInfo`]); an [`Authorizer`] decides each
//! (verb, resource, namespace, name) in Kubernetes' attributes for the API
//! group `features.kubeflow.org`. [`Auth`] puts the two together with
//! short-lived caches of identities and decisions, and fails closed: an
//! error or a timeout of either is never an allow.
//!
//! - [`token`]: offline verification of service-account JWTs (JWKS).
//! - [`kube`]: TokenReview and SubjectAccessReview against the API server.
//! - [`rbac`]: an in-process evaluator of Kubernetes RBAC objects.

pub mod kube;
pub mod rbac;
pub mod token;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use moka::Expiry;
use moka::sync::Cache;

pub use rbac::{Policy, Request, UserInfo};

use crate::config::{AuthConfig, AuthenticationMode, AuthorizationMode};

/// The API group larder's resources belong to.
pub const API_GROUP: &str = "features.kubeflow.org";

/// Longer bearer tokens are refused before any parsing (and below HTTP/2's
/// header-size limit, so both transports answer UNAUTHENTICATED). Kubernetes'
/// projected tokens are about 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The user of every request when authentication is `none`.
pub const ANONYMOUS: &str = "system:anonymous";

/// The verbs larder authorizes, as Kubernetes names them.
pub const VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

/// The resources larder authorizes: the registry's, and the materialized
/// intervals of feature views.
pub const RESOURCES: [&str; 7] = [
    "entities",
    "datasources",
    "featureviews",
    "ondemandfeatureviews",
    "featureservices",
    "materializations",
    "*",
];

/// `verb` as one of [`VERBS`], or a message listing them.
pub fn known_verb(verb: &str) -> Result<&'static str, String> {
    VERBS
        .into_iter()
        .find(|v| *v == verb)
        .ok_or_else(|| format!("unknown verb {verb:?} (known: {})", VERBS.join(", ")))
}

/// `resource` as one of [`RESOURCES`], or a message listing them.
pub fn known_resource(resource: &str) -> Result<&'static str, String> {
    RESOURCES
        .into_iter()
        .find(|r| *r == resource)
        .ok_or_else(|| {
            format!(
                "unknown resource {resource:?} (known: {})",
                RESOURCES.join(", ")
            )
        })
}

/// Why a request may not go on. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that did not verify.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The authenticator or authorizer could not answer; the request is
    /// refused (fail closed).
    #[error("authorization unavailable: {0}")]
    Unavailable(String),
}

/// Who is calling, after authentication.
pub type Caller = Arc<UserInfo>;

/// How a bearer token becomes a user.
pub enum Authenticator {
    /// Development only: every request is [`ANONYMOUS`] and allowed.
    None,
    /// A Kubernetes static token file: `token,user,uid[,"group1,group2"]`.
    Static(HashMap<String, Caller>),
    /// Service-account JWTs verified offline against the issuer's keys,
    /// which are reloaded in the background.
    Jwks(Arc<ArcSwap<token::JwksVerifier>>),
    /// TokenReview against the Kubernetes API server.
    Kubernetes(kube::TokenReviewer),
}

/// How a user's request is decided.
pub enum Authorizer {
    /// Only with authentication `none`.
    AllowAll,
    /// Kubernetes RBAC objects evaluated in-process; replaceable at run
    /// time (SIGHUP reloads the files).
    Rbac(ArcSwap<Policy>),
    /// SubjectAccessReview against the Kubernetes API server.
    Kubernetes(kube::AccessReviewer),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    user: Caller,
    verb: &'static str,
    resource: &'static str,
    namespace: Box<str>,
    name: Box<str>,
}

/// Identities live until the earlier of the cache TTL and the token's own
/// expiry; allows and denies each have their own TTL.
struct Lifetimes {
    allow: Duration,
    deny: Duration,
}

impl Expiry<Box<str>, (Caller, Instant)> for Lifetimes {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &(Caller, Instant),
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.1.saturating_duration_since(created_at))
    }
}

impl Expiry<DecisionKey, bool> for Lifetimes {
    fn expire_after_create(
        &self,
        _key: &DecisionKey,
        allowed: &bool,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if *allowed { self.allow } else { self.deny })
    }
}

/// Authentication and authorization with their caches.
pub struct Auth {
    authenticator: Authenticator,
    authorizer: Authorizer,
    identities: Cache<Box<str>, (Caller, Instant)>,
    decisions: Cache<DecisionKey, bool>,
    identity_ttl: Duration,
    timeout: Duration,
    anonymous: Caller,
}

/// Seconds since the epoch as an [`Instant`], for token expiry.
fn instant_of_epoch(seconds: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Instant::now() + Duration::from_secs(seconds.saturating_sub(now))
}

/// The bearer token of an `Authorization` header value.
fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or_else(|| {
        AuthError::Unauthenticated(
            "no bearer token: send `Authorization: Bearer <service-account token>`".into(),
        )
    })?;
    if value.len() > MAX_TOKEN_BYTES + 7 {
        return Err(AuthError::Unauthenticated(format!(
            "the bearer token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Unauthenticated(
            "the Authorization header is not `Bearer <token>`".into(),
        ));
    }
    Ok(token)
}

impl Auth {
    pub fn new(
        authenticator: Authenticator,
        authorizer: Authorizer,
        identity_ttl: Duration,
        allow_ttl: Duration,
        deny_ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Auth {
            authenticator,
            authorizer,
            identities: Cache::builder()
                .max_capacity(100_000)
                .expire_after(Lifetimes {
                    allow: allow_ttl,
                    deny: deny_ttl,
                })
                .build(),
            decisions: Cache::builder()
                .max_capacity(1_000_000)
                .expire_after(Lifetimes {
                    allow: allow_ttl,
                    deny: deny_ttl,
                })
                .build(),
            identity_ttl,
            timeout,
            anonymous: Arc::new(UserInfo {
                name: ANONYMOUS.into(),
                groups: vec!["system:unauthenticated".into()],
            }),
        }
    }

    /// No authentication, everything allowed: development only.
    pub fn disabled() -> Self {
        let z = Duration::ZERO;
        Self::new(Authenticator::None, Authorizer::AllowAll, z, z, z, z)
    }

    /// Builds what `config` describes, reading token and policy files and
    /// starting the JWKS refresher. Must run inside a Tokio runtime.
    pub async fn from_config(config: &AuthConfig) -> Result<Self, String> {
        let authenticator =
            match config.authentication {
                AuthenticationMode::None => {
                    return Ok(Self::disabled());
                }
                AuthenticationMode::Static => {
                    let path = config.static_token_file.as_deref().ok_or(
                        "auth.static_token_file: required when auth.authentication is static",
                    )?;
                    Authenticator::Static(read_static_tokens(path)?)
                }
                AuthenticationMode::Jwks => {
                    Authenticator::Jwks(start_jwks(config, config.audiences.clone()).await?)
                }
                AuthenticationMode::Kubernetes => Authenticator::Kubernetes(
                    kube::TokenReviewer::new(kube_client(config)?, config.audiences.clone()),
                ),
            };
        let authorizer = match config.authorization {
            AuthorizationMode::Rbac => {
                Authorizer::Rbac(ArcSwap::from_pointee(load_policy(&config.rbac_policy)?))
            }
            AuthorizationMode::Kubernetes => {
                Authorizer::Kubernetes(kube::AccessReviewer::new(kube_client(config)?))
            }
        };
        Ok(Self::new(
            authenticator,
            authorizer,
            config.identity_ttl,
            config.allow_ttl,
            config.deny_ttl,
            config.timeout,
        ))
    }

    /// Whether requests go unchecked (authentication `none`).
    pub fn is_disabled(&self) -> bool {
        matches!(self.authenticator, Authenticator::None)
    }

    /// Refuses to expose an unauthenticated server beyond this machine
    /// unless the configuration says so explicitly; warns loudly either way.
    pub fn check_bind(&self, address: SocketAddr, allow_insecure: bool) -> Result<(), String> {
        if !self.is_disabled() {
            return Ok(());
        }
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (auth.authentication: none): every caller may read \
             and write everything. Development only."
        );
        if address.ip().is_loopback() || allow_insecure {
            Ok(())
        } else {
            Err(format!(
                "refusing to listen on {address} with auth.authentication none: bind a loopback \
                 address, configure authentication, or set auth.allow_insecure_bind: true"
            ))
        }
    }

    /// Replaces the RBAC policy (the `rbac` authorizer only) and forgets
    /// every cached decision.
    pub fn replace_policy(&self, policy: Policy) -> Result<(), String> {
        match &self.authorizer {
            Authorizer::Rbac(current) => {
                current.store(Arc::new(policy));
                self.decisions.invalidate_all();
                Ok(())
            }
            _ => Err("the authorizer is not rbac".into()),
        }
    }

    /// Who sends the request with this `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        if self.is_disabled() {
            return Ok(self.anonymous.clone());
        }
        let token = bearer(header)?;
        if let Some((user, _)) = self.identities.get(token) {
            return Ok(user);
        }
        let ttl_end = Instant::now() + self.identity_ttl;
        let (user, until) = match &self.authenticator {
            Authenticator::None => unreachable!("handled above"),
            Authenticator::Static(tokens) => {
                let user = tokens.get(token).cloned().ok_or_else(|| {
                    AuthError::Unauthenticated("the token is not in the static token file".into())
                })?;
                (user, ttl_end)
            }
            Authenticator::Jwks(verifier) => {
                let (user, exp) = verifier
                    .load()
                    .verify_until(token)
                    .map_err(|e| AuthError::Unauthenticated(e.to_string()))?;
                (Arc::new(user), ttl_end.min(instant_of_epoch(exp)))
            }
            Authenticator::Kubernetes(reviewer) => {
                let review = tokio::time::timeout(self.timeout, reviewer.review(token))
                    .await
                    .map_err(|_| {
                        AuthError::Unavailable(format!(
                            "the TokenReview took longer than {:?}",
                            self.timeout
                        ))
                    })?;
                // The API server (or a webhook behind it) may quote the
                // token back: never pass it on.
                let redact = |why: String| why.replace(token, "<token>");
                let user = review.map_err(|e| match e {
                    kube::ReviewError::Rejected(why) => AuthError::Unauthenticated(redact(why)),
                    kube::ReviewError::Unavailable(why) => AuthError::Unavailable(redact(why)),
                })?;
                (Arc::new(user), ttl_end)
            }
        };
        self.identities.insert(token.into(), (user.clone(), until));
        Ok(user)
    }

    /// Whether `user` may `verb` the `resource` called `name` in
    /// `namespace` (empty `name` for list and create).
    pub async fn allowed(
        &self,
        user: &Caller,
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<bool, AuthError> {
        let request = Request {
            verb,
            api_group: API_GROUP,
            resource,
            namespace,
            name,
        };
        if matches!(self.authorizer, Authorizer::AllowAll) {
            return Ok(true);
        }
        let key = DecisionKey {
            user: user.clone(),
            verb,
            resource,
            namespace: namespace.into(),
            name: name.into(),
        };
        if let Some(allowed) = self.decisions.get(&key) {
            return Ok(allowed);
        }
        let allowed = match &self.authorizer {
            Authorizer::AllowAll => true,
            Authorizer::Rbac(policy) => policy.load().allows(user, &request),
            Authorizer::Kubernetes(reviewer) => {
                tokio::time::timeout(self.timeout, reviewer.review(user, &request))
                    .await
                    .map_err(|_| {
                        AuthError::Unavailable(format!(
                            "the SubjectAccessReview took longer than {:?}",
                            self.timeout
                        ))
                    })?
                    .map_err(|e| AuthError::Unavailable(e.to_string()))?
            }
        };
        self.decisions.insert(key, allowed);
        Ok(allowed)
    }

    /// Like [`Auth::allowed`], with a denial as [`AuthError::Forbidden`]
    /// naming the user, the verb and the object.
    pub async fn authorize(
        &self,
        user: &Caller,
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<(), AuthError> {
        if self.allowed(user, verb, resource, namespace, name).await? {
            return Ok(());
        }
        let object = if name.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource} {name:?}")
        };
        Err(AuthError::Forbidden(format!(
            "{} may not {verb} {object} in namespace {namespace:?}",
            user.name
        )))
    }
}

/// The namespace a caller acts in: a service account's own namespace, or
/// for a person the namespace that lists them (`user_namespaces`). Never
/// anything the request says.
pub fn caller_namespace<'a>(
    caller: &'a UserInfo,
    user_namespaces: &'a HashMap<String, String>,
) -> Option<&'a str> {
    caller
        .name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns)
        .or_else(|| user_namespaces.get(&caller.name).map(String::as_str))
}

/// Reads a Kubernetes static token file: `token,user,uid[,"g1,g2"]` per
/// line; every user is also in `system:authenticated`.
pub fn read_static_tokens(path: &Path) -> Result<HashMap<String, Caller>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("auth.static_token_file {}: {e}", path.display()))?;
    let mut tokens = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("{} line {}: {why}", path.display(), i + 1);
        let mut parts = line.splitn(4, ',');
        let token = parts.next().unwrap_or_default().trim();
        let user = parts.next().map(str::trim).unwrap_or_default();
        let _uid = parts
            .next()
            .ok_or_else(|| bad("expected token,user,uid[,groups]"))?;
        if token.is_empty() || user.is_empty() {
            return Err(bad("the token and the user must not be empty"));
        }
        let mut groups: Vec<String> = parts
            .next()
            .map(|g| {
                g.trim()
                    .trim_matches('"')
                    .split(',')
                    .map(|g| g.trim().to_owned())
                    .filter(|g| !g.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        groups.push("system:authenticated".into());
        let info = Arc::new(UserInfo {
            name: user.to_owned(),
            groups,
        });
        if tokens.insert(token.to_owned(), info).is_some() {
            return Err(bad("this token is already listed"));
        }
    }
    Ok(tokens)
}

/// Reads RBAC manifests from files and folders (`*.yaml`, `*.yml`).
pub fn load_policy(paths: &[PathBuf]) -> Result<Policy, String> {
    if paths.is_empty() {
        return Err(
            "auth.rbac_policy: name the RBAC manifest files or folders when auth.authorization is rbac"
                .into(),
        );
    }
    let mut text = String::new();
    for path in paths {
        let mut files = Vec::new();
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| format!("auth.rbac_policy {}: {e}", path.display()))?;
            for entry in entries.flatten() {
                let p = entry.path();
                if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.clone());
        }
        for file in files {
            let part = std::fs::read_to_string(&file)
                .map_err(|e| format!("auth.rbac_policy {}: {e}", file.display()))?;
            text.push_str("\n---\n");
            text.push_str(&part);
        }
    }
    Policy::from_yaml(&text).map_err(|e| format!("auth.rbac_policy: {e}"))
}

fn kube_client(config: &AuthConfig) -> Result<kube::KubeClient, String> {
    let result = match &config.kubeconfig {
        Some(path) => kube::KubeClient::from_kubeconfig(
            Some(path),
            config.kube_context.as_deref(),
            config.timeout,
        ),
        None => kube::KubeClient::infer(config.timeout),
    };
    result.map_err(|e| format!("auth: cannot reach the Kubernetes API server: {e}"))
}

/// Loads the JWKS once (start-up fails if it cannot) and keeps reloading
/// it every `jwks.refresh`; a failed reload keeps the keys in use.
async fn start_jwks(
    config: &AuthConfig,
    audiences: Vec<String>,
) -> Result<Arc<ArcSwap<token::JwksVerifier>>, String> {
    let jwks = config.jwks.clone();
    let issuer = jwks
        .issuer
        .clone()
        .ok_or("auth.jwks.issuer: required when auth.authentication is jwks")?;
    let fetch = move || {
        let jwks = jwks.clone();
        async move { fetch_jwks(&jwks).await }
    };
    let build = {
        let issuer = issuer.clone();
        move |text: String| {
            let auds: Vec<&str> = audiences.iter().map(String::as_str).collect();
            token::JwksVerifier::new(&text, &issuer, &auds)
        }
    };
    let first = build(fetch().await?).map_err(|e| format!("auth.jwks: {e}"))?;
    let shared = Arc::new(ArcSwap::from_pointee(first));
    let refresh = config.jwks.refresh;
    if !refresh.is_zero() {
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh).await;
                let Some(target) = weak.upgrade() else { return };
                match fetch()
                    .await
                    .and_then(|t| build(t).map_err(|e| e.to_string()))
                {
                    Ok(v) => target.store(Arc::new(v)),
                    Err(e) => {
                        tracing::warn!(error = %e, "reloading the JWKS failed; keeping the keys in use")
                    }
                }
            }
        });
    }
    Ok(shared)
}

async fn fetch_jwks(jwks: &crate::config::JwksConfig) -> Result<String, String> {
    match (&jwks.file, &jwks.url) {
        (Some(file), None) => tokio::fs::read_to_string(file)
            .await
            .map_err(|e| format!("auth.jwks.file {}: {e}", file.display())),
        (None, Some(url)) => {
            let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
            if let Some(ca) = &jwks.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("auth.jwks.ca_file {}: {e}", ca.display()))?;
                let cert = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| format!("auth.jwks.ca_file {}: {e}", ca.display()))?;
                builder = builder.add_root_certificate(cert);
            }
            let client = builder.build().map_err(|e| format!("auth.jwks: {e}"))?;
            let mut request = client.get(url);
            if let Some(token_file) = &jwks.token_file {
                let token = std::fs::read_to_string(token_file)
                    .map_err(|e| format!("auth.jwks.token_file {}: {e}", token_file.display()))?;
                request = request.bearer_auth(token.trim());
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("auth.jwks.url {url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("auth.jwks.url {url}: HTTP {}", response.status()));
            }
            response
                .text()
                .await
                .map_err(|e| format!("auth.jwks.url {url}: {e}"))
        }
        _ => Err("auth.jwks: set exactly one of file and url".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        assert!(matches!(bearer(None), Err(AuthError::Unauthenticated(_))));
        assert!(matches!(
            bearer(Some("Basic abc")),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            bearer(Some("Bearer ")),
            Err(AuthError::Unauthenticated(_))
        ));
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let e = bearer(Some(&huge)).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        assert!(!e.to_string().contains("aaaa"), "{e}");
    }

    #[test]
    fn static_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(
            &path,
            "# dev tokens\nt-alice,alice@example.com,1,\"team-a,team-b\"\nt-bob,bob@example.com,2\n",
        )
        .unwrap();
        let tokens = read_static_tokens(&path).unwrap();
        let alice = &tokens["t-alice"];
        assert_eq!(alice.name, "alice@example.com");
        assert_eq!(
            alice.groups,
            ["team-a", "team-b", "system:authenticated"].map(String::from)
        );
        assert_eq!(
            tokens["t-bob"].groups,
            ["system:authenticated"].map(String::from)
        );
        std::fs::write(&path, "t,alice\n").unwrap();
        let e = read_static_tokens(&path).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[tokio::test]
    async fn none_allows_and_refuses_public_binds() {
        let auth = Auth::disabled();
        let caller = auth.authenticate(None).await.unwrap();
        assert_eq!(caller.name, ANONYMOUS);
        assert!(
            auth.allowed(&caller, "delete", "featureviews", "x", "y")
                .await
                .unwrap()
        );
        assert!(
            auth.check_bind("127.0.0.1:1".parse().unwrap(), false)
                .is_ok()
        );
        assert!(auth.check_bind("[::1]:1".parse().unwrap(), false).is_ok());
        let e = auth
            .check_bind("0.0.0.0:1".parse().unwrap(), false)
            .unwrap_err();
        assert!(e.contains("allow_insecure_bind"), "{e}");
        assert!(auth.check_bind("0.0.0.0:1".parse().unwrap(), true).is_ok());
    }
}
