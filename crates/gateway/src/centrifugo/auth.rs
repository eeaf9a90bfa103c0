//! Connection and subscription tokens (JWT).
//!
//! The algorithm is pinned by configuration: a token whose header names another
//! algorithm (including `none`) is refused, whatever its signature.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{TokenAlgorithm, TokenConfig};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

// A token without `sub` is the anonymous user "", as in Centrifugo: SDKs and
// backends issue such tokens for guests.
#[derive(Debug, Deserialize)]
struct ConnectionClaims {
    #[serde(default)]
    sub: String,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    info: Option<Box<RawValue>>,
    #[serde(default)]
    channels: Vec<String>,
    /// Only subscription tokens name a channel: a token that does is refused here.
    channel: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SubscriptionClaims {
    #[serde(default)]
    sub: String,
    nbf: Option<u64>,
    iat: Option<u64>,
    channel: String,
    exp: Option<u64>,
    info: Option<Box<RawValue>>,
}

/// A verified connection token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionToken {
    pub user: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    pub info: Option<Bytes>,
    /// Channels the server subscribes the connection to.
    pub channels: Vec<String>,
}

/// A verified subscription token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionToken {
    pub user: String,
    pub channel: String,
    pub expires_at: Option<u64>,
    pub info: Option<Bytes>,
}

/// Verifies tokens with the configured key and algorithm.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} tokens need {1}")]
    Missing(TokenAlgorithm, &'static str),
    #[error("token key: {0}")]
    Bad(#[from] jsonwebtoken::errors::Error),
}

impl Verifier {
    /// A verifier, or `None` when no key is configured (tokens are then refused).
    pub fn new(config: &TokenConfig) -> Result<Option<Verifier>, KeyError> {
        let (algorithm, key) = match config.algorithm {
            TokenAlgorithm::HS256 => match &config.hmac_secret {
                None => return Ok(None),
                Some(secret) => (
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret.as_bytes()),
                ),
            },
            TokenAlgorithm::RS256 => {
                let pem = config
                    .public_key_pem
                    .as_ref()
                    .ok_or(KeyError::Missing(TokenAlgorithm::RS256, "token_public_key"))?;
                (Algorithm::RS256, DecodingKey::from_rsa_pem(pem.as_bytes())?)
            }
            TokenAlgorithm::ES256 => {
                let pem = config
                    .public_key_pem
                    .as_ref()
                    .ok_or(KeyError::Missing(TokenAlgorithm::ES256, "token_public_key"))?;
                (Algorithm::ES256, DecodingKey::from_ec_pem(pem.as_bytes())?)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims = HashSet::new();
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Some(Verifier { key, validation }))
    }

    fn decode<T: for<'de> Deserialize<'de>>(&self, token: &str) -> Result<T, TokenError> {
        jsonwebtoken::decode::<T>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }

    pub fn connection(&self, token: &str) -> Result<ConnectionToken, TokenError> {
        let claims: ConnectionClaims = self.decode(token)?;
        if claims.channel.is_some() {
            return Err(TokenError::Invalid(
                "a subscription token (it names a channel) is not a connection token".into(),
            ));
        }
        check_times(claims.exp, claims.nbf, claims.iat)?;
        Ok(ConnectionToken {
            user: claims.sub,
            expires_at: claims.exp,
            info: claims.info.map(raw_bytes),
            channels: claims.channels,
        })
    }

    pub fn subscription(&self, token: &str) -> Result<SubscriptionToken, TokenError> {
        let claims: SubscriptionClaims = self.decode(token)?;
        check_times(claims.exp, claims.nbf, claims.iat)?;
        Ok(SubscriptionToken {
            user: claims.sub,
            channel: claims.channel,
            expires_at: claims.exp,
            info: claims.info.map(raw_bytes),
        })
    }
}

/// jsonwebtoken skips the time claims when they are not required; those present
/// are always enforced here, without leeway: expired at `exp`, not valid before
/// `nbf`, and not issued in the future.
fn check_times(exp: Option<u64>, nbf: Option<u64>, iat: Option<u64>) -> Result<(), TokenError> {
    let now = now_secs();
    if exp.is_some_and(|exp| exp <= now) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::Invalid("not valid yet (nbf)".into()));
    }
    if iat.is_some_and(|iat| iat > now) {
        return Err(TokenError::Invalid("issued in the future (iat)".into()));
    }
    Ok(())
}

fn raw_bytes(raw: Box<RawValue>) -> Bytes {
    let text: Box<str> = raw.into();
    Bytes::from(text.into_boxed_bytes())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn hs_verifier(secret: &str) -> Verifier {
        Verifier::new(&TokenConfig {
            algorithm: TokenAlgorithm::HS256,
            hmac_secret: Some(secret.into()),
            public_key_pem: None,
        })
        .unwrap()
        .unwrap()
    }

    fn hs_token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn valid_connection_token() {
        let v = hs_verifier("s");
        let exp = now_secs() + 60;
        let t = hs_token(
            "s",
            json!({"sub": "42", "exp": exp, "info": {"name": "Ann"}, "channels": ["news"]}),
        );
        let token = v.connection(&t).unwrap();
        assert_eq!(token.user, "42");
        assert_eq!(token.expires_at, Some(exp));
        assert_eq!(&token.info.unwrap()[..], br#"{"name":"Ann"}"#);
        assert_eq!(token.channels, vec!["news"]);
    }

    #[test]
    fn wrong_key_expired_and_alg_none_are_refused() {
        let v = hs_verifier("s");
        let t = hs_token("other", json!({"sub": "42"}));
        assert!(matches!(v.connection(&t), Err(TokenError::Invalid(_))));
        let t = hs_token("s", json!({"sub": "42", "exp": now_secs() - 1}));
        assert_eq!(v.connection(&t), Err(TokenError::Expired));
        // {"alg":"none","typ":"JWT"} . {"sub":"42"} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiJ9.";
        assert!(matches!(v.connection(none), Err(TokenError::Invalid(_))));
        assert!(matches!(
            v.connection("garbage"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn a_subscription_token_is_not_a_connection_token() {
        let v = hs_verifier("s");
        let t = hs_token("s", json!({"sub": "42", "channel": "priv:x"}));
        assert!(matches!(v.connection(&t), Err(TokenError::Invalid(_))));
        assert_eq!(v.subscription(&t).unwrap().user, "42");
    }

    #[test]
    fn not_before_and_issued_at_are_enforced() {
        let v = hs_verifier("s");
        let later = now_secs() + 3600;
        let earlier = now_secs() - 60;
        for claims in [
            json!({"sub": "42", "nbf": later}),
            json!({"sub": "42", "iat": later}),
        ] {
            let t = hs_token("s", claims.clone());
            assert!(
                matches!(v.connection(&t), Err(TokenError::Invalid(_))),
                "{claims}"
            );
            let mut sub = claims;
            sub["channel"] = json!("c");
            let t = hs_token("s", sub.clone());
            assert!(
                matches!(v.subscription(&t), Err(TokenError::Invalid(_))),
                "{sub}"
            );
        }
        let t = hs_token("s", json!({"sub": "42", "nbf": earlier, "iat": earlier}));
        assert_eq!(v.connection(&t).unwrap().user, "42");
    }

    #[test]
    fn algorithm_is_pinned() {
        // A token signed with HS384 and the right secret is still refused.
        let v = hs_verifier("s");
        let t = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "42"}),
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(matches!(v.connection(&t), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn subscription_token() {
        let v = hs_verifier("s");
        let t = hs_token("s", json!({"sub": "42", "channel": "private:x"}));
        let token = v.subscription(&t).unwrap();
        assert_eq!(
            (token.user.as_str(), token.channel.as_str()),
            ("42", "private:x")
        );
        let t = hs_token("s", json!({"sub": "42"}));
        assert!(v.subscription(&t).is_err(), "channel claim is required");
    }

    #[test]
    fn tokens_without_sub_are_the_anonymous_user() {
        // What centrifuge-js users generate for guests.
        let v = hs_verifier("s");
        let t = hs_token("s", json!({"iat": 1738078824}));
        let token = v.connection(&t).unwrap();
        assert_eq!((token.user.as_str(), token.expires_at), ("", None));
        let t = hs_token("s", json!({"iat": 1738078824, "channel": "test1"}));
        let token = v.subscription(&t).unwrap();
        assert_eq!((token.user.as_str(), token.channel.as_str()), ("", "test1"));
        // An explicit empty `sub` means the same.
        let t = hs_token("s", json!({"sub": ""}));
        assert_eq!(v.connection(&t).unwrap().user, "");
    }
}

#[cfg(test)]
mod asymmetric_tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    #[test]
    fn es256_token_verifies_with_the_public_key_only() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let verifier = Verifier::new(&TokenConfig {
            algorithm: TokenAlgorithm::ES256,
            hmac_secret: None,
            public_key_pem: Some(pair.public_key_pem()),
        })
        .unwrap()
        .unwrap();
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::ES256), &json!({"sub": "7"}), &key).unwrap();
        assert_eq!(verifier.connection(&token).unwrap().user, "7");

        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let forged = encode(&Header::new(Algorithm::ES256), &json!({"sub": "7"}), &key).unwrap();
        assert!(verifier.connection(&forged).is_err());
    }
}

#[cfg(test)]
mod rsa_tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    // A key pair made for this test only (tests/fixtures); it protects nothing.
    const PRIVATE: &str = include_str!("../../tests/fixtures/rsa-test-private.pem");
    const PUBLIC: &str = include_str!("../../tests/fixtures/rsa-test-public.pem");

    #[test]
    fn rs256_token_verifies_with_the_public_key_and_hs256_is_refused() {
        let verifier = Verifier::new(&TokenConfig {
            algorithm: TokenAlgorithm::RS256,
            hmac_secret: None,
            public_key_pem: Some(PUBLIC.into()),
        })
        .unwrap()
        .unwrap();
        let key = EncodingKey::from_rsa_pem(PRIVATE.as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::RS256), &json!({"sub": "r"}), &key).unwrap();
        assert_eq!(verifier.connection(&token).unwrap().user, "r");
        // The classic confusion attack: HS256 signed with the public key as secret.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "r"}),
            &EncodingKey::from_secret(PUBLIC.as_bytes()),
        )
        .unwrap();
        assert!(verifier.connection(&confused).is_err());
    }
}
