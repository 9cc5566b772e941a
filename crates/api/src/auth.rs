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

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// The least entropy we accept in a secret, estimated from its characters (see
/// [`estimated_entropy_bits`]). 32 random bytes in hex or base64 estimate at 170-250 bits;
/// words and repeats stay far below.
pub const MIN_SECRET_ENTROPY_BITS: f64 = 128.0;

/// How to make a secret that passes, for the error message.
pub const SECRET_HINT: &str = "generate one with `openssl rand -base64 48`";

/// Files of this repository that show example secrets. Any `JWT_SECRET` value written in them
/// is public, so it is refused at start.
const DOCUMENTS_WITH_EXAMPLES: [&str; 2] = [
    include_str!("../../../.env.example"),
    include_str!("../../../README.md"),
];

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
    /// Not valid before, seconds since the epoch (the issue time).
    pub nbf: i64,
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

/// `JWT_SECRET` was refused. Never carries the secret.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum WeakSecretError {
    /// Shorter than [`MIN_SECRET_BYTES`].
    #[error("JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes, got {0}; {SECRET_HINT}")]
    TooShort(usize),
    /// Written in this repository's docs or examples, so anyone can sign tokens with it.
    #[error("JWT_SECRET is an example value published in this repository; {SECRET_HINT}")]
    Published,
    /// Too predictable: words, repeats or runs of characters.
    #[error(
        "JWT_SECRET is too predictable (about {0:.0} bits of entropy, {MIN_SECRET_ENTROPY_BITS} needed); {SECRET_HINT}"
    )]
    LowEntropy(f64),
}

/// Checks a signing secret: long enough, not published, not predictable.
///
/// # Errors
/// The first [`WeakSecretError`] that applies.
pub fn check_secret(secret: &str) -> Result<(), WeakSecretError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(WeakSecretError::TooShort(secret.len()));
    }
    if published_secrets().any(|example| example == secret) {
        return Err(WeakSecretError::Published);
    }
    let bits = estimated_entropy_bits(secret);
    if bits < MIN_SECRET_ENTROPY_BITS {
        return Err(WeakSecretError::LowEntropy(bits));
    }
    Ok(())
}

/// Every `JWT_SECRET` value written in [`DOCUMENTS_WITH_EXAMPLES`] (`JWT_SECRET=value`, quoted
/// or not, also inside code spans).
fn published_secrets() -> impl Iterator<Item = &'static str> {
    DOCUMENTS_WITH_EXAMPLES
        .iter()
        .flat_map(|document| document.split("JWT_SECRET=").skip(1))
        .filter_map(|after| {
            let value = after.trim_start_matches(['\'', '"']);
            let end = value
                .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`'))
                .unwrap_or(value.len());
            Some(&value[..end]).filter(|v| !v.is_empty())
        })
}

/// A conservative estimate of a secret's entropy: its length times the Shannon entropy of its
/// character frequencies, and no more than that of its shortest repeating unit (so
/// `abcdabcd...` counts as `abcd`). Random output of any encoding scores near its true entropy;
/// words and patterns score low.
pub fn estimated_entropy_bits(secret: &str) -> f64 {
    let chars: Vec<char> = secret.chars().collect();
    let period = (1..=chars.len())
        .find(|&p| chars.len().is_multiple_of(p) && chars.chunks(p).all(|chunk| chunk == &chars[..p]))
        .unwrap_or(chars.len());
    let unit = &chars[..period];
    let mut counts = std::collections::HashMap::new();
    for c in unit {
        *counts.entry(c).or_insert(0_u32) += 1;
    }
    #[allow(clippy::cast_precision_loss)] // lengths far below 2^52
    let len = unit.len() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&n| {
            let p = f64::from(n) / len;
            -p * p.log2()
        })
        .sum();
    per_char * len
}

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
    /// [`WeakSecretError`] when the secret is short, published or predictable
    /// ([`check_secret`]).
    pub fn new(secret: &SecretString, ttl: Duration) -> Result<Self, WeakSecretError> {
        check_secret(secret.expose_secret())?;
        let bytes = secret.expose_secret().as_bytes();
        // Pin the algorithm: a token claiming `none` or an asymmetric algorithm is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "sub"]);
        validation.validate_nbf = true;
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
            nbf: now,
            exp: now.saturating_add(ttl),
            iss: ISSUER.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a token whose signature, algorithm, issuer, expiry and not-before check
    /// out, and that was not issued in the future.
    ///
    /// # Errors
    /// Any verification failure.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
        if claims.sub != claims.user_id.to_string() {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidSubject.into());
        }
        // jsonwebtoken checks `iat` only for presence: one from the future is a forged or
        // misissued token, or a clock we must not trust.
        let latest_iat = Utc::now().timestamp().saturating_add(LEEWAY_SECS.cast_signed());
        if claims.iat > latest_iat {
            return Err(jsonwebtoken::errors::ErrorKind::ImmatureSignature.into());
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

    /// 48 random bytes, base64: what `openssl rand -base64 48` prints.
    const SECRET: &str = "q3J9tXo0Lw2u8VnR+5cYbZk1HdQm7sPe4AfGi6TjKxUvWyE2rN0o/Bl3CzDgFhIa";

    fn service(ttl: Duration) -> TokenService {
        TokenService::new(&secret(SECRET), ttl).unwrap()
    }

    fn sign(tokens: &TokenService, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &tokens.encoding).unwrap()
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert_eq!(check_secret("too-short"), Err(WeakSecretError::TooShort(9)));
    }

    #[test]
    fn every_example_secret_of_the_repository_is_refused() {
        // Arrange
        let examples: Vec<&str> = published_secrets().collect();

        // Assert: the .env.example value is found, and refused even though it is long
        assert!(
            examples.contains(&"change-me-to-at-least-32-random-bytes-base64"),
            "{examples:?}"
        );
        for example in examples {
            assert!(check_secret(example).is_err(), "{example} accepted");
        }
    }

    #[test]
    fn predictable_secrets_are_refused_and_random_ones_accepted() {
        for weak in [
            "a".repeat(64),
            "passwordpasswordpasswordpassword".to_owned(),
            "0123456789abcdef0123456789abcdef".to_owned(),
            "correct-horse-battery-staple".repeat(2),
        ] {
            assert!(
                matches!(check_secret(&weak), Err(WeakSecretError::LowEntropy(_))),
                "{weak} accepted"
            );
        }
        assert_eq!(check_secret(SECRET), Ok(()));
        // 32 random bytes as hex, and a UUID-based secret as the tests use
        assert_eq!(
            check_secret("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            Ok(())
        );
        assert_eq!(check_secret("test-secret-67e55044-10b1-426f-9247-bb680e5fe0c8"), Ok(()));
    }

    #[test]
    fn the_refusal_says_how_to_make_a_secret_and_never_shows_it() {
        let message = check_secret(&"a".repeat(64)).unwrap_err().to_string();
        assert!(message.contains("openssl rand"), "{message}");
        assert!(!message.contains("aaaa"), "{message}");
    }

    #[test]
    fn a_token_not_yet_valid_or_issued_in_the_future_is_refused() {
        // Arrange
        let tokens = service(Duration::from_secs(3600));
        let claims = tokens.verify(&tokens.issue(&user()).unwrap()).unwrap();
        let later = claims.iat + 600;

        // Act
        let not_yet = sign(
            &tokens,
            &Claims {
                nbf: later,
                ..claims.clone()
            },
        );
        let from_the_future = sign(
            &tokens,
            &Claims {
                iat: later,
                ..claims.clone()
            },
        );
        let without_nbf = {
            let mut value = serde_json::to_value(&claims).unwrap();
            value.as_object_mut().unwrap().remove("nbf");
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &value, &tokens.encoding).unwrap()
        };

        // Assert
        assert!(tokens.verify(&not_yet).is_err());
        assert!(tokens.verify(&from_the_future).is_err());
        assert!(tokens.verify(&without_nbf).is_err());
        assert!(tokens.verify(&sign(&tokens, &claims)).is_ok());
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
        assert_eq!(claims.nbf, claims.iat);
    }

    #[test]
    fn an_expired_token_is_refused() {
        // Arrange: issued with a TTL of zero, checked after the leeway
        let tokens = service(Duration::ZERO);
        let mut claims = tokens.verify(&tokens.issue(&user()).unwrap()).unwrap();
        claims.exp -= 60;
        let expired = sign(&tokens, &claims);

        // Act + Assert
        assert!(tokens.verify(&expired).is_err());
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = TokenService::new(&secret("Zr7Kq2Vx9LmP4sWt8NbY3cHd6FgJ1aEo"), Duration::from_secs(60)).unwrap();
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
