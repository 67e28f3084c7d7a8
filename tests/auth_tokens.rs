//! Service-account tokens signed for real (RS256), verified offline against
//! the issuer's JWKS: every claim check must hold before a user is
//! believed.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use larder::auth::token::{JwksVerifier, TokenError};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "features.kubeflow.org";

struct Key {
    pem: String,
    jwk: serde_json::Value,
}

fn key(kid: &str) -> Key {
    let mut rng = rsa::rand_core::OsRng;
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let public = private.to_public_key();
    Key {
        pem: private
            .to_pkcs1_pem(Default::default())
            .unwrap()
            .to_string(),
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(public.n().to_bytes_be()), "e": b64(public.e().to_bytes_be()),
        }),
    }
}

fn keys() -> &'static (Key, Key) {
    static KEYS: OnceLock<(Key, Key)> = OnceLock::new();
    KEYS.get_or_init(|| (key("issuer-key"), key("other-key")))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(key: &Key, kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims() -> serde_json::Value {
    json!({
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "sub": "system:serviceaccount:kubeflow-bob:default-editor",
        "exp": now() + 600,
        "nbf": now() - 10,
        "iat": now() - 10,
        "kubernetes.io": {"namespace": "kubeflow-bob", "serviceaccount": {"name": "default-editor"}},
    })
}

fn verifier() -> JwksVerifier {
    let jwks = json!({"keys": [keys().0.jwk]}).to_string();
    JwksVerifier::new(&jwks, ISSUER, &[AUDIENCE]).unwrap()
}

#[test]
fn a_valid_token_is_the_service_account() {
    let token = sign(&keys().0, "issuer-key", claims());
    let user = verifier().verify(&token).unwrap();
    assert_eq!(
        user.name,
        "system:serviceaccount:kubeflow-bob:default-editor"
    );
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:kubeflow-bob",
            "system:authenticated"
        ]
    );
}

#[test]
fn every_check_fails_closed() {
    let v = verifier();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&keys().0, "issuer-key", c)
    };
    let refused = [
        ("wrong audience", with(&|c| c["aud"] = json!(["api"]))),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
        ),
        ("expired", with(&|c| c["exp"] = json!(now() - 120))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 600))),
        (
            "no expiry",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "not a service account",
            with(&|c| c["sub"] = json!("alice")),
        ),
        (
            "signed by another key",
            sign(&keys().1, "issuer-key", claims()),
        ),
        ("unknown key id", sign(&keys().1, "other-key", claims())),
    ];
    for (why, token) in refused {
        assert!(v.verify(&token).is_err(), "{why} must be refused");
    }

    // A payload changed after signing.
    let token = sign(&keys().0, "issuer-key", claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged = claims_with_sub("system:serviceaccount:kubeflow-alice:default-editor");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    assert!(
        v.verify(&parts.join(".")).is_err(),
        "a tampered payload must be refused"
    );

    // An unsigned token ("alg": "none") and an HMAC one are refused before
    // any claim is read.
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims())
    );
    assert!(v.verify(&none).is_err());
    let hmac = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    assert_eq!(v.verify(&hmac), Err(TokenError::Algorithm("HS256".into())));
    assert_eq!(v.verify("not a token"), Err(TokenError::Malformed));
}

fn claims_with_sub(sub: &str) -> serde_json::Value {
    let mut c = claims();
    c["sub"] = json!(sub);
    c
}

#[test]
fn a_jwks_without_usable_keys_is_refused() {
    assert!(JwksVerifier::new(r#"{"keys": []}"#, ISSUER, &[AUDIENCE]).is_err());
    assert!(JwksVerifier::new("not json", ISSUER, &[AUDIENCE]).is_err());
}
