//! JWT issuing and verification.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use liquidity_core::catalog::User;
use liquidity_core::{TenantId, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// `iss` of every token we issue, and the only issuer we accept.
pub const ISSUER: &str = "liquidity";

/// The shortest `JWT_SECRET` we accept: 32 bytes, the output size of HS256's hash, so the key
/// is never the weak link.
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// The payload of our tokens: what the spec asks for (`tenantId`, `taxId`, `userId`,
/// `username`) plus the registered claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// Subject: the user id again, as JWT consumers expect.
    pub sub: String,
    /// The tenant whose database every report query of this caller goes to.
    pub tenant_id: TenantId,
    /// The user's tax id.
    pub tax_id: String,
    /// The user id.
    pub user_id: UserId,
    /// The username.
    pub username: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Always [`ISSUER`].
    pub iss: String,
}

/// What the request's `Authorization` header proved.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No bearer token.
    Anonymous,
    /// A token that failed verification (bad signature, expired, wrong algorithm...).
    Invalid,
    /// A verified token.
    User(Claims),
}

/// `JWT_SECRET` was refused.
#[derive(Debug, thiserror::Error)]
#[error("JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes, got {0}")]
pub struct WeakSecretError(usize);

/// Issues and verifies HS256 tokens with one secret.
#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenService {
    /// A service signing with `secret`; tokens live for `ttl`.
    ///
    /// # Errors
    /// [`WeakSecretError`] when the secret is shorter than [`MIN_SECRET_BYTES`].
    pub fn new(secret: &SecretString, ttl: Duration) -> Result<Self, WeakSecretError> {
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(WeakSecretError(bytes.len()));
        }
        // Pin the algorithm: a token claiming `none` or an asymmetric algorithm is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            ttl,
        })
    }

    /// A signed token for the user.
    ///
    /// # Errors
    /// Signing failures (not expected with HS256).
    pub fn issue(&self, user: &User) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: user.id.to_string(),
            tenant_id: user.tenant_id,
            tax_id: user.tax_id.clone(),
            user_id: user.id,
            username: user.username.clone(),
            iat: now,
            exp: now.saturating_add(ttl),
            iss: ISSUER.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a token whose signature, algorithm, issuer and expiry check out.
    ///
    /// # Errors
    /// Any verification failure.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
        if claims.sub != claims.user_id.to_string() {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidSubject.into());
        }
        Ok(claims)
    }

    /// How to read the `Authorization` header value of a request.
    pub fn authenticate(&self, authorization: Option<&str>) -> Auth {
        let Some(value) = authorization else {
            return Auth::Anonymous;
        };
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "));
        match token.map(|t| self.verify(t.trim())) {
            Some(Ok(claims)) => Auth::User(claims),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "bearer token refused");
                Auth::Invalid
            }
            None => Auth::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    fn user() -> User {
        User {
            id: UserId::new_random(),
            tenant_id: TenantId::new_random(),
            username: "alice".into(),
            tax_id: "TAX-1".into(),
        }
    }

    fn service(ttl: Duration) -> TokenService {
        TokenService::new(&secret("0123456789abcdef0123456789abcdef"), ttl).unwrap()
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(TokenService::new(&secret("too-short"), Duration::from_secs(60)).is_err());
    }

    #[test]
    fn an_issued_token_carries_the_spec_claims_and_verifies() {
        // Arrange
        let tokens = service(Duration::from_secs(3600));
        let user = user();

        // Act
        let claims = tokens.verify(&tokens.issue(&user).unwrap()).unwrap();

        // Assert
        assert_eq!(claims.tenant_id, user.tenant_id);
        assert_eq!(claims.user_id, user.id);
        assert_eq!(claims.tax_id, "TAX-1");
        assert_eq!(claims.username, "alice");
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn an_expired_token_is_refused() {
        // Arrange: issued with a TTL of zero, checked after the leeway
        let tokens = service(Duration::ZERO);
        let mut claims = tokens.verify(&tokens.issue(&user()).unwrap()).unwrap();
        claims.exp -= 60;
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding).unwrap();

        // Act + Assert
        assert!(tokens.verify(&expired).is_err());
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = TokenService::new(&secret("another-secret-another-secret-xx"), Duration::from_secs(60)).unwrap();
        let token = other.issue(&user()).unwrap();
        assert!(service(Duration::from_secs(60)).verify(&token).is_err());
    }

    #[test]
    fn a_token_with_another_algorithm_is_refused() {
        // Arrange: same secret, HS512 instead of the pinned HS256
        let tokens = service(Duration::from_secs(60));
        let claims = tokens.verify(&tokens.issue(&user()).unwrap()).unwrap();
        let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &tokens.encoding).unwrap();

        // Act + Assert
        assert!(tokens.verify(&hs512).is_err());
    }

    #[test]
    fn the_authorization_header_is_read_as_anonymous_invalid_or_user() {
        let tokens = service(Duration::from_secs(60));
        let token = tokens.issue(&user()).unwrap();
        assert!(matches!(tokens.authenticate(None), Auth::Anonymous));
        assert!(matches!(tokens.authenticate(Some("Basic abc")), Auth::Invalid));
        assert!(matches!(tokens.authenticate(Some("Bearer nope")), Auth::Invalid));
        assert!(matches!(
            tokens.authenticate(Some(&format!("Bearer {token}"))),
            Auth::User(_)
        ));
    }
}
