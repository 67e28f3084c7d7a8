//! What authentication and authorization add to a request: a cached
//! identity, a cached decision per feature view, and (for reference) the
//! uncached work: RBAC evaluation and an RS256 signature check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;

use larder::auth::token::JwksVerifier;
use larder::auth::{Auth, Authenticator, Authorizer, Policy, Request, UserInfo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: feature-view }
rules:
  - apiGroups: [features.kubeflow.org]
    resources: [featureviews, featureservices]
    verbs: [get, list, watch]
"#;

/// The story's shape at a larger scale: one RoleBinding per profile
/// namespace, so that evaluation walks many bindings.
fn policy(namespaces: usize) -> Policy {
    let mut text = POLICY.to_owned();
    for i in 0..namespaces {
        text.push_str(&format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{ name: view, namespace: kubeflow-user{i} }}\n\
             roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: feature-view }}\n\
             subjects: [{{ kind: ServiceAccount, name: default-editor, namespace: kubeflow-user{i} }}]\n"
        ));
    }
    Policy::from_yaml(&text).unwrap()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let user = "system:serviceaccount:kubeflow-user7:default-editor";
    let caller = Arc::new(UserInfo {
        name: user.into(),
        groups: vec!["system:authenticated".into()],
    });
    let tokens: HashMap<String, Arc<UserInfo>> = [("t".repeat(900), caller.clone())].into();
    let header = format!("Bearer {}", "t".repeat(900));
    let auth = Auth::new(
        Authenticator::Static(tokens),
        Authorizer::Rbac(ArcSwap::from_pointee(policy(500))),
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let views = ["v0", "v1", "v2", "v3", "v4"];

    let mut group = c.benchmark_group("auth");
    group.bench_function("authenticate_cached", |b| {
        b.iter(|| runtime.block_on(auth.authenticate(Some(&header))).unwrap())
    });
    group.bench_function("authorize_5_views_cached", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for v in views {
                    auth.authorize(&caller, "get", "featureviews", "kubeflow-user7", v)
                        .await
                        .unwrap();
                }
            })
        })
    });
    let uncached = policy(500);
    group.bench_function("rbac_evaluate_500_bindings", |b| {
        let request = Request {
            verb: "get",
            api_group: "features.kubeflow.org",
            resource: "featureviews",
            namespace: "kubeflow-user7",
            name: "v0",
        };
        b.iter(|| assert!(uncached.allows(&caller, &request)))
    });

    // An RS256 service-account token checked against a JWKS, uncached.
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let public = private.to_public_key();
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "alg": "RS256", "kid": "k",
        "n": b64(public.n().to_bytes_be()), "e": b64(public.e().to_bytes_be())}]})
    .to_string();
    let verifier = JwksVerifier::new(&jwks, "https://issuer", &["features.kubeflow.org"]).unwrap();
    let mut jwt_header = Header::new(Algorithm::RS256);
    jwt_header.kid = Some("k".into());
    let token = encode(
        &jwt_header,
        &serde_json::json!({"iss": "https://issuer", "aud": ["features.kubeflow.org"],
            "sub": user, "exp": 4_000_000_000u64}),
        &EncodingKey::from_rsa_pem(private.to_pkcs1_pem(Default::default()).unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    group.bench_function("jwks_verify_rs256_uncached", |b| {
        b.iter(|| verifier.verify(&token).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
