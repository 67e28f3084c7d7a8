//! A test token issuer: a real RSA key pair, its JWKS, and service-account
//! tokens signed with it (RS256), as a Kubernetes API server issues them.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const AUDIENCE: &str = "features.kubeflow.org";

pub struct Key {
    pub kid: String,
    pub private_pem: String,
    pub public_pem: String,
    pub jwk: serde_json::Value,
}

fn make_key(kid: &str) -> Key {
    let mut rng = rsa::rand_core::OsRng;
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let public = private.to_public_key();
    Key {
        kid: kid.to_owned(),
        private_pem: private
            .to_pkcs1_pem(Default::default())
            .unwrap()
            .to_string(),
        public_pem: public.to_public_key_pem(Default::default()).unwrap(),
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(public.n().to_bytes_be()), "e": b64(public.e().to_bytes_be()),
        }),
    }
}

/// The issuer's key (in the JWKS) and a stranger's key (not in it).
pub fn keys() -> &'static (Key, Key) {
    static KEYS: OnceLock<(Key, Key)> = OnceLock::new();
    KEYS.get_or_init(|| (make_key("issuer-key"), make_key("stranger-key")))
}

/// The issuer's JWKS document.
pub fn jwks() -> String {
    json!({"keys": [keys().0.jwk]}).to_string()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The claims of a valid token of service account `ns:name`.
pub fn claims(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "exp": now() + 600,
        "nbf": now() - 10,
        "iat": now() - 10,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name}},
    })
}

pub fn sign_with(key: &Key, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A valid token of service account `ns:name`.
pub fn token(ns: &str, name: &str) -> String {
    sign_with(&keys().0, &claims(ns, name))
}

/// Tokens that must all be refused, each with why.
pub fn bad_tokens() -> Vec<(&'static str, String)> {
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("kubeflow-bob", "default-editor");
        f(&mut c);
        sign_with(&keys().0, &c)
    };
    let good = token("kubeflow-bob", "default-editor");
    let mut tampered: Vec<String> = good.split('.').map(str::to_owned).collect();
    tampered[1] = b64(&claims("kubeflow-alice", "default-editor"));
    let hs256_with_public_key = encode(
        &Header::new(Algorithm::HS256),
        &claims("kubeflow-alice", "default-editor"),
        &EncodingKey::from_secret(keys().0.public_pem.as_bytes()),
    )
    .unwrap();
    vec![
        ("garbage", "not-a-token".to_owned()),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims("kubeflow-alice", "default-editor"))
            ),
        ),
        ("HS256 signed with the public key", hs256_with_public_key),
        (
            "signed by another key",
            sign_with(&keys().1, &claims("kubeflow-alice", "default-editor")),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!(["kubernetes"])),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
        ),
        ("expired", with(&|c| c["exp"] = json!(now() - 120))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 600))),
        ("tampered payload", tampered.join(".")),
        ("oversized", format!("{good}{}", "A".repeat(9_000))),
    ]
}

/// Kubeflow profiles: each owner's notebooks (service account
/// default-editor) get kubeflow-edit in their own namespace.
pub const PROFILE_BINDINGS: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: default-editor, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeflow-edit }
subjects: [{ kind: ServiceAccount, name: default-editor, namespace: kubeflow-alice }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: default-editor, namespace: kubeflow-bob }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeflow-edit }
subjects: [{ kind: ServiceAccount, name: default-editor, namespace: kubeflow-bob }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: default-editor, namespace: kubeflow-charlie }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeflow-edit }
subjects: [{ kind: ServiceAccount, name: default-editor, namespace: kubeflow-charlie }]
"#;

/// A folder with the story's RBAC policy: the shipped ClusterRoles and
/// registry roles, Kubeflow's aggregating roles and the profiles' bindings.
/// (No share yet: deploy/rbac/share-example.yaml is added by the tests.)
pub fn story_policy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, path) in [
        ("clusterroles.yaml", "deploy/rbac/clusterroles.yaml"),
        ("registry.yaml", "deploy/rbac/registry.yaml"),
        (
            "kubeflow-roles.yaml",
            "deploy/rbac/testdata/kubeflow-roles.yaml",
        ),
    ] {
        std::fs::copy(root.join(path), dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("profiles.yaml"), PROFILE_BINDINGS).unwrap();
    dir
}

/// `auth` configured for this issuer (its JWKS written into `dir`) and RBAC
/// from the `policy` folder.
pub fn auth_config(dir: &std::path::Path, policy: &std::path::Path) -> larder::config::AuthConfig {
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks()).unwrap();
    let mut config = larder::config::AuthConfig {
        authentication: larder::config::AuthenticationMode::Jwks,
        authorization: larder::config::AuthorizationMode::Rbac,
        rbac_policy: vec![policy.to_path_buf()],
        ..Default::default()
    };
    config.jwks.file = Some(jwks_file);
    config.jwks.issuer = Some(ISSUER.into());
    config
}
