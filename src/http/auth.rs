//! The auth-service access token: HS256 JWT, claim `user_id` (UUID), `exp` required
//! and `nbf` honoured with 30 s leeway, `type` (when present) `access`: a refresh
//! token opens nothing. `is_superuser` true only for JSON `true` or exactly `"True"`.
//! Sent raw (as the old frontend does) or as `Bearer <jwt>`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use crate::domain::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub is_superuser: bool,
    /// The token's `exp` (Unix seconds): the console's cookie ends with it.
    pub expires_at: i64,
}

#[derive(Deserialize)]
struct Claims {
    user_id: Value,
    #[serde(default)]
    is_superuser: Value,
    /// auth-service marks its tokens `access` or `refresh`.
    #[serde(default, rename = "type")]
    kind: Option<Value>,
    /// Required and checked by the validation; read for the console's cookie.
    exp: Value,
}

pub struct Keys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl Keys {
    pub fn new(secret: &str) -> Keys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        Keys {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn authenticate(&self, header: Option<&str>) -> Result<User, ApiError> {
        let raw = header
            .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?
            .trim();
        let token = match raw.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            Some(_) => {
                return Err(ApiError::unauthorized(
                    "Authorization must be a JWT or `Bearer <jwt>`",
                ))
            }
            None => raw,
        };
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| ApiError::unauthorized(why_invalid(&e)))?;
        match &data.claims.kind {
            None => {}
            Some(Value::String(k)) if k == "access" => {}
            Some(other) => {
                return Err(ApiError::unauthorized(format!(
                    "only an access token opens the API; this token's type is {other}"
                )))
            }
        }
        let id = data
            .claims
            .user_id
            .as_str()
            .and_then(|s| s.parse::<UserId>().ok())
            .ok_or_else(|| ApiError::unauthorized("token claim user_id must be a UUID"))?;
        let is_superuser = matches!(&data.claims.is_superuser, Value::Bool(true))
            || matches!(&data.claims.is_superuser, Value::String(s) if s == "True");
        Ok(User {
            id,
            is_superuser,
            expires_at: data.claims.exp.as_f64().map_or(0, |e| e as i64),
        })
    }

    /// Signs any claims with the service's key (tests of what a token may say).
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 encoding cannot fail")
    }

    /// Issues an access token like auth-service does (for `billing token` and tests).
    pub fn issue(&self, user_id: UserId, is_superuser: bool, ttl_secs: i64) -> String {
        let exp = chrono::Utc::now().timestamp() + ttl_secs;
        let claims = serde_json::json!({
            "user_id": user_id.to_string(),
            "is_superuser": is_superuser,
            "exp": exp,
            "type": "access",
        });
        self.sign(&claims)
    }
}

/// Why a token was refused, in the caller's terms (not the JWT library's).
fn why_invalid(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token must be signed with HS256".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::Json(_) => "the token's header or claims are not what auth-service issues \
                               (HS256; user_id, exp, is_superuser)"
            .into(),
        _ => "the token is not a well-formed JWT".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: Value, key: &str, alg: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> i64 {
        chrono::Utc::now().timestamp() + 600
    }

    #[test]
    fn accepts_raw_and_bearer_tokens() {
        let keys = Keys::new("k");
        let id = UserId::new();
        let t = keys.issue(id, false, 60);
        assert_eq!(keys.authenticate(Some(&t)).unwrap().id, id);
        assert_eq!(
            keys.authenticate(Some(&format!("Bearer {t}"))).unwrap().id,
            id
        );
    }

    #[test]
    fn superuser_only_for_true_or_exact_capital_true() {
        let keys = Keys::new("k");
        let id = uuid::Uuid::new_v4().to_string();
        for (value, expected) in [
            (json!(true), true),
            (json!("True"), true),
            (json!("true"), false),
            (json!("False"), false),
            (json!(1), false),
            (json!(false), false),
        ] {
            let t = token(
                json!({"user_id": id, "exp": exp(), "is_superuser": value}),
                "k",
                Algorithm::HS256,
            );
            assert_eq!(
                keys.authenticate(Some(&t)).unwrap().is_superuser,
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn rejects_bad_tokens() {
        let keys = Keys::new("k");
        let id = uuid::Uuid::new_v4().to_string();
        let past = chrono::Utc::now().timestamp() - 120;
        let bad = [
            token(
                json!({"user_id": id, "exp": exp()}),
                "other",
                Algorithm::HS256,
            ),
            token(json!({"user_id": id, "exp": past}), "k", Algorithm::HS256),
            token(json!({"user_id": id}), "k", Algorithm::HS256),
            token(
                json!({"user_id": "42", "exp": exp()}),
                "k",
                Algorithm::HS256,
            ),
            token(json!({"user_id": 42, "exp": exp()}), "k", Algorithm::HS256),
            token(json!({"user_id": id, "exp": exp()}), "k", Algorithm::HS384),
            "not.a.jwt".to_owned(),
        ];
        for t in bad {
            assert!(keys.authenticate(Some(&t)).is_err(), "{t}");
        }
        assert!(keys.authenticate(None).is_err());
    }

    #[test]
    fn expired_within_leeway_is_accepted() {
        let keys = Keys::new("k");
        let t = token(
            json!({"user_id": uuid::Uuid::new_v4().to_string(), "exp": chrono::Utc::now().timestamp() - 10}),
            "k",
            Algorithm::HS256,
        );
        assert!(keys.authenticate(Some(&t)).is_ok());
    }

    #[test]
    fn alg_none_is_rejected() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(format!(
            r#"{{"user_id":"{}","exp":{}}}"#,
            uuid::Uuid::new_v4(),
            exp()
        ));
        let t = format!("{header}.{claims}.");
        assert!(Keys::new("k").authenticate(Some(&t)).is_err());
    }
}
