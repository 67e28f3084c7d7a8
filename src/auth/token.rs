//! Offline verification of Kubernetes service-account tokens against the
//! issuer's keys (a JWKS document): signature (RS256 or ES256), `iss`,
//! `aud`, `exp` and `nbf`, before any claim is believed.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::rbac::UserInfo;

/// Why a token was refused. Messages name the check that failed but never
/// echo the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is signed with {0:?}, which is not accepted (RS256, ES256)")]
    Algorithm(String),
    #[error("the token's signing key is not among the issuer's keys")]
    UnknownKey,
    #[error("the token failed verification: {0}")]
    Invalid(String),
    #[error("the token names no service account")]
    NotAServiceAccount,
}

/// The issuer's keys and what tokens must say.
pub struct JwksVerifier {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    issuer: String,
    audiences: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Checks `sub` is `system:serviceaccount:NAMESPACE:NAME` with both parts
/// present, and returns the Kubernetes user and groups it stands for.
fn service_account_user(sub: &str) -> Result<UserInfo, TokenError> {
    let rest = sub
        .strip_prefix("system:serviceaccount:")
        .ok_or(TokenError::NotAServiceAccount)?;
    let (namespace, name) = rest.split_once(':').ok_or(TokenError::NotAServiceAccount)?;
    if namespace.is_empty() || name.is_empty() || name.contains(':') {
        return Err(TokenError::NotAServiceAccount);
    }
    Ok(UserInfo {
        name: sub.to_owned(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    })
}

impl JwksVerifier {
    /// Reads a JWKS document (`{"keys": [...]}`); keys that are neither RSA
    /// nor P-256 EC keys are skipped.
    pub fn new(jwks_json: &str, issuer: &str, audiences: &[&str]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                    if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
            keys.push((jwk.common.key_id.clone(), algorithm, key));
        }
        if keys.is_empty() {
            return Err("the JWKS document holds no RSA or P-256 key".into());
        }
        Ok(JwksVerifier {
            keys,
            issuer: issuer.to_owned(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        })
    }

    /// Verifies `token` and returns who it stands for.
    pub fn verify(&self, token: &str) -> Result<UserInfo, TokenError> {
        self.verify_until(token).map(|(user, _)| user)
    }

    /// Verifies `token` and returns who it stands for and when it expires
    /// (`exp`, seconds since the epoch).
    pub fn verify_until(&self, token: &str) -> Result<(UserInfo, u64), TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let candidates = self.keys.iter().filter(|(kid, alg, _)| {
            *alg == header.alg && (header.kid.is_none() || kid.as_deref() == header.kid.as_deref())
        });
        let mut last = TokenError::UnknownKey;
        for (_, alg, key) in candidates {
            let mut validation = Validation::new(*alg);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&self.audiences);
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.leeway = 30;
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            match decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    return Ok((service_account_user(&data.claims.sub)?, data.claims.exp));
                }
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
}
