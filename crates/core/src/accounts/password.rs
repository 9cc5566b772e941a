//! argon2id password hashing, off the async executor.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP's first recommended argon2id configuration: 19 MiB of memory, 2 passes, 1 lane.
/// About 15-20 ms of CPU per hash on our 2-core machines (see the README's benchmarks).
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// Hashing failed (never because of a wrong password).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct PasswordHashError(String);

/// Hashes and verifies passwords with argon2id and a per-user random salt.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A hash of a random password with the same parameters, verified when the username does
    /// not exist so that a login costs the same either way.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    /// A hasher with OWASP parameters. Computes the dummy hash once (one hash of CPU time).
    ///
    /// # Errors
    /// If argon2 refuses the parameters, which would be a programming error.
    pub fn new() -> Result<Self, PasswordHashError> {
        let params = Params::new(MEMORY_KIB, PASSES, LANES, None).map_err(|e| PasswordHashError(e.to_string()))?;
        let dummy_password = uuid::Uuid::new_v4().to_string();
        let dummy_hash = hash_with(&params, dummy_password.as_bytes())?;
        Ok(Self {
            params,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of the password.
    ///
    /// # Errors
    /// Hashing failures, or the blocking pool being shut down.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let params = self.params.clone();
        spawn_blocking_in_span(move || hash_with(&params, password.as_bytes()))
            .await
            .context("hashing task failed")?
            .context("hashing failed")
    }

    /// Whether the password matches the stored PHC string. With `None` (no such user) it
    /// verifies against the dummy hash and answers `false`, spending the same time.
    ///
    /// # Errors
    /// A stored hash that is not a valid PHC string, or the blocking pool being shut down.
    pub async fn verify(&self, password: String, stored: Option<String>) -> anyhow::Result<bool> {
        let known_user = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = spawn_blocking_in_span(move || -> anyhow::Result<bool> {
            let parsed =
                PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored hash is not a PHC string: {e}"))?;
            Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .context("verification task failed")??;
        Ok(known_user && matches)
    }
}

fn hash_with(params: &Params, password: &[u8]) -> Result<String, PasswordHashError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordHashError(e.to_string()))
}

/// argon2 is CPU-bound for ~20 ms: run it on the blocking pool so it never stalls the
/// executor's worker threads, keeping the caller's span for its logs.
fn spawn_blocking_in_span<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> tokio::task::JoinHandle<R> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        // Arrange
        let hasher = PasswordHasher::new().unwrap();

        // Act
        let hash = hasher.hash("correct-horse".into()).await.unwrap();

        // Assert
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(hasher.verify("correct-horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!hasher.verify("wrong-horse".into(), Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn the_same_password_gets_a_different_salt_each_time() {
        let hasher = PasswordHasher::new().unwrap();
        let a = hasher.hash("same-password".into()).await.unwrap();
        let b = hasher.hash("same-password".into()).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies_even_with_the_dummy_password() {
        let hasher = PasswordHasher::new().unwrap();
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }
}
