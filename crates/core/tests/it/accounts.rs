//! Registration, login and the per-account lockout against a real catalog, with two `Accounts`
//! standing for two API replicas.

use liquidity_core::accounts::{AccountError, Accounts, HashLimits, LOCKOUT, PasswordHasher, Registration};
use liquidity_test_support::TestDatabases;

async fn replicas() -> (TestDatabases, Accounts, Accounts) {
    liquidity_test_support::init_tracing();
    let dbs = TestDatabases::create(1, 2).await;
    let replica = || {
        let catalog = sqlx::PgPool::connect_lazy(&dbs.catalog_url()).unwrap();
        Accounts::new(catalog, PasswordHasher::new(HashLimits::default()).unwrap())
    };
    let (a, b) = (replica(), replica());
    a.register(Registration {
        tenant_id: dbs.tenants[0].id,
        username: "alice".into(),
        password: "correct-horse-battery".into(),
        tax_id: "TAX-1".into(),
    })
    .await
    .unwrap();
    (dbs, a, b)
}

#[tokio::test]
async fn failures_counted_on_one_replica_lock_the_account_on_the_other() {
    // Arrange: the free failures and the one that earns the lockout, all on replica A
    let (_dbs, a, b) = replicas().await;
    for _ in 0..=LOCKOUT.free_failures {
        assert!(matches!(
            a.login("alice", "wrong".into()).await,
            Err(AccountError::InvalidCredentials)
        ));
    }

    // Act: the right password on replica B, with the username in another case
    let on_b = b.login("ALICE", "correct-horse-battery".into()).await;

    // Assert
    match on_b {
        Err(AccountError::LockedOut(remaining)) => assert!(remaining <= LOCKOUT.first_lockout, "{remaining:?}"),
        other => panic!("expected a lockout, got {:?}", other.map(|u| u.username)),
    }
}

#[tokio::test]
async fn unknown_usernames_are_locked_like_known_ones() {
    let (_dbs, a, _b) = replicas().await;
    for _ in 0..=LOCKOUT.free_failures {
        assert!(matches!(
            a.login("mallory", "guess".into()).await,
            Err(AccountError::InvalidCredentials)
        ));
    }
    assert!(matches!(
        a.login("mallory", "guess".into()).await,
        Err(AccountError::LockedOut(_))
    ));
}

#[tokio::test]
async fn failures_below_the_threshold_do_not_lock_and_a_success_clears_them() {
    // Arrange
    let (_dbs, a, _b) = replicas().await;
    for _ in 0..LOCKOUT.free_failures {
        assert!(matches!(
            a.login("alice", "wrong".into()).await,
            Err(AccountError::InvalidCredentials)
        ));
    }

    // Act
    let success = a.login("alice", "correct-horse-battery".into()).await;

    // Assert: logged in, and the count starts again from zero
    assert!(success.is_ok());
    for _ in 0..LOCKOUT.free_failures {
        assert!(matches!(
            a.login("alice", "wrong".into()).await,
            Err(AccountError::InvalidCredentials)
        ));
    }
    assert!(a.login("alice", "correct-horse-battery".into()).await.is_ok());
}
