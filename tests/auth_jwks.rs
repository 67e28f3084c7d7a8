//! The `jwks` authenticator with the issuer's keys at a URL: keys are
//! reloaded every `auth.jwks.refresh`, so a rotated key is accepted once
//! published, and a failed reload keeps the keys in use.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::jwt;
use larder::auth::{Auth, AuthError};
use larder::config::{AuthConfig, AuthenticationMode, AuthorizationMode};
use serde_json::json;

/// What the fake issuer answers: a status and a JWKS document.
type Answer = Arc<Mutex<(StatusCode, String)>>;

async fn issuer(answer: Answer) -> String {
    let app = Router::new().route(
        "/openid/v1/jwks",
        get(move || {
            let answer = answer.clone();
            async move { answer.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/openid/v1/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn token_with(key: &jwt::Key, n: i64) -> String {
    let mut claims = jwt::claims("kubeflow-bob", "default-editor");
    // A distinct token each time, so no identity cache answers for it.
    claims["iat"] = json!(jwt::now() - n);
    jwt::sign_with(key, &claims)
}

#[tokio::test]
async fn keys_at_a_url_are_reloaded_and_kept_when_a_reload_fails() {
    let (issuer_key, rotated_key) = jwt::keys();
    let answer: Answer = Arc::new(Mutex::new((
        StatusCode::OK,
        json!({"keys": [issuer_key.jwk]}).to_string(),
    )));
    let url = issuer(answer.clone()).await;
    let policy = jwt::story_policy();
    let mut config = AuthConfig {
        authentication: AuthenticationMode::Jwks,
        authorization: AuthorizationMode::Rbac,
        rbac_policy: vec![policy.path().to_path_buf()],
        ..Default::default()
    };
    config.jwks.url = Some(url);
    config.jwks.issuer = Some(jwt::ISSUER.into());
    config.jwks.refresh = Duration::from_millis(200);
    let auth = Auth::from_config(&config).await.unwrap();
    let bearer = |t: String| format!("Bearer {t}");

    assert!(
        auth.authenticate(Some(&bearer(token_with(issuer_key, 1))))
            .await
            .is_ok()
    );
    let e = auth
        .authenticate(Some(&bearer(token_with(rotated_key, 2))))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Unauthenticated(_)), "{e}");

    // The issuer publishes the rotated key; within a refresh it is accepted.
    answer.lock().unwrap().1 = json!({"keys": [issuer_key.jwk, rotated_key.jwk]}).to_string();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let user = auth
        .authenticate(Some(&bearer(token_with(rotated_key, 3))))
        .await
        .unwrap();
    assert_eq!(
        user.name,
        "system:serviceaccount:kubeflow-bob:default-editor"
    );

    // The issuer fails: the keys in use stay.
    *answer.lock().unwrap() = (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        auth.authenticate(Some(&bearer(token_with(rotated_key, 4))))
            .await
            .is_ok()
    );

    // The issuer drops the old key: tokens signed with it stop verifying.
    *answer.lock().unwrap() = (
        StatusCode::OK,
        json!({"keys": [rotated_key.jwk]}).to_string(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        auth.authenticate(Some(&bearer(token_with(issuer_key, 5))))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_unreachable_jwks_url_stops_start_up() {
    let mut config = AuthConfig {
        authentication: AuthenticationMode::Jwks,
        rbac_policy: vec![jwt::story_policy().path().to_path_buf()],
        ..Default::default()
    };
    config.jwks.url = Some(format!("http://127.0.0.1:{}/jwks", common::free_port()));
    config.jwks.issuer = Some(jwt::ISSUER.into());
    let e = Auth::from_config(&config).await.err().unwrap();
    assert!(e.contains("auth.jwks.url"), "{e}");
}
