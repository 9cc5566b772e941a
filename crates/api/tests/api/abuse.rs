//! Abuse resistance over real HTTP: one costly field per operation, per-account lockout,
//! per-IP buckets, bounded hashing.

use std::num::NonZeroU32;
use std::time::Duration;

use futures::future::join_all;
use liquidity_api::throttle::IpQuota;
use liquidity_core::accounts::HashLimits;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::helpers::{LOGIN, START_REPORT, error_code, spawn_app, spawn_app_with};

fn login_vars(username: &str, password: &str) -> Value {
    json!({ "input": { "username": username, "password": password } })
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_with_120_aliased_logins_is_refused_before_any_is_evaluated() {
    // Arrange
    let app = spawn_app().await;
    app.user(0, "alice").await;
    let aliases: String = (0..120)
        .map(|i| format!(r#"a{i}: login(input: {{username: "alice", password: "guess-{i}"}}) {{ token }} "#))
        .collect();

    // Act
    let body = app.graphql(&format!("mutation {{ {aliases} }}"), json!({}), None).await;

    // Assert: one error, no data, and no guess was counted against the account
    assert!(body["data"].is_null(), "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(error_code(&body), "OPERATION_REFUSED");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "costlyFields");
    assert!(
        body["errors"][0]["locations"].is_null(),
        "about the whole operation: {body}"
    );
    let failures = count(&app.dbs.catalog_url(), "SELECT count(*) FROM login_throttle").await;
    assert_eq!(failures, 0);
}

#[tokio::test]
async fn a_request_with_aliased_start_reports_writes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user(0, "alice").await;

    // Act
    let body = app
        .graphql(
            "mutation { a: startReport { reportId } b: startReport { reportId } }",
            json!({}),
            Some(&user.token),
        )
        .await;

    // Assert
    assert_eq!(error_code(&body), "OPERATION_REFUSED");
    let reports = count(&app.dbs.tenants[0].url, "SELECT count(*) FROM report").await;
    assert_eq!(reports, 0);
    // One startReport alone still works
    let one = app.graphql(START_REPORT, json!({}), Some(&user.token)).await;
    assert!(one["data"]["startReport"]["reportId"].is_string(), "{one}");
}

#[tokio::test]
async fn too_many_root_fields_are_refused() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user(0, "alice").await;
    let fields: String = (0..=liquidity_api::guard::shape::MAX_ROOT_FIELDS)
        .map(|i| format!("m{i}: me {{ id }} "))
        .collect();

    // Act
    let body = app
        .graphql(&format!("{{ {fields} }}"), json!({}), Some(&user.token))
        .await;

    // Assert
    assert_eq!(error_code(&body), "OPERATION_REFUSED");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "rootFields");
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_with_429_and_retry_after() {
    // Arrange: 5 free failures, the 6th earns a 1 s lockout
    let app = spawn_app().await;
    app.user(0, "alice").await;
    app.user(0, "bob").await;
    for i in 0..6 {
        let body = app
            .graphql(LOGIN, login_vars("alice", &format!("wrong-{i}")), None)
            .await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "failure {i}: {body}");
    }

    // Act: the right password, in another case, during the lockout
    let locked = app
        .post(LOGIN, login_vars("ALICE", "correct-horse-battery"))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(locked.headers()["retry-after"], "1");
    let body: Value = locked.json().await.unwrap();
    assert_eq!(error_code(&body), "RATE_LIMITED");
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], 1);
    // Another account is not affected
    let bob = app
        .graphql(LOGIN, login_vars("bob", "correct-horse-battery"), None)
        .await;
    assert!(bob["data"]["login"]["token"].is_string(), "{bob}");
}

#[tokio::test]
async fn a_success_after_the_lockout_resets_the_count() {
    // Arrange: alice locked for 1 s
    let app = spawn_app().await;
    app.user(0, "alice").await;
    for i in 0..6 {
        app.graphql(LOGIN, login_vars("alice", &format!("wrong-{i}")), None)
            .await;
    }

    // Act: wait out the lockout with the right password
    let app_ref = &app;
    liquidity_test_support::wait_until(Duration::from_secs(10), "the lockout to end", || async move {
        let response = app_ref
            .post(LOGIN, login_vars("alice", "correct-horse-battery"))
            .send()
            .await
            .unwrap();
        response.status() == StatusCode::OK
            && response.json::<Value>().await.unwrap()["data"]["login"]["token"].is_string()
    })
    .await;

    // Assert: five more wrong passwords are free again
    for i in 0..5 {
        let body = app
            .graphql(LOGIN, login_vars("alice", &format!("again-{i}")), None)
            .await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "failure {i}: {body}");
    }
    let row: i64 = count(&app.dbs.catalog_url(), "SELECT failures::int8 FROM login_throttle").await;
    assert_eq!(row, 5);
}

#[tokio::test]
async fn a_client_over_its_ip_quota_gets_429_while_another_forwarded_client_does_not() {
    // Arrange: 2 per client, and 127.0.0.1 is a trusted proxy
    let app = spawn_app_with(|config| {
        config.ip_quota = IpQuota {
            per_minute: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        };
        config.settings.trusted_proxies = "127.0.0.1".parse().unwrap();
    })
    .await;
    let send = |client: &'static str| {
        app.post(LOGIN, login_vars("nobody", "wrong-password"))
            .header("x-forwarded-for", client)
            .send()
    };

    // Act
    let first = send("198.51.100.1").await.unwrap();
    let second = send("198.51.100.1").await.unwrap();
    let third = send("198.51.100.1").await.unwrap();
    let other = send("198.51.100.2").await.unwrap();

    // Assert
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = third.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(&third.json::<Value>().await.unwrap()), "RATE_LIMITED");
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    // Arrange: no trusted proxies, 1 per client
    let app = spawn_app_with(|config| {
        config.ip_quota = IpQuota {
            per_minute: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(1).unwrap(),
        };
    })
    .await;

    // Act: a fresh X-Forwarded-For on each request does not buy a fresh bucket
    let first = app
        .post(LOGIN, login_vars("nobody", "wrong-password"))
        .header("x-forwarded-for", "198.51.100.1");
    let second = app
        .post(LOGIN, login_vars("nobody", "wrong-password"))
        .header("x-forwarded-for", "198.51.100.2");
    let first = first.send().await.unwrap();
    let second = second.send().await.unwrap();

    // Assert
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn logins_beyond_the_hash_slots_get_a_quick_503_instead_of_queueing() {
    // Arrange: one hash at a time, 1 ms of queueing
    let app = spawn_app_with(|config| {
        config.hash_limits = HashLimits {
            concurrency: 1,
            queue_timeout: Duration::from_millis(1),
            ..HashLimits::default()
        };
    })
    .await;
    app.user(0, "alice").await;

    // Act: 20 logins at once
    let responses =
        join_all((0..20).map(|_| app.post(LOGIN, login_vars("alice", "correct-horse-battery")).send())).await;

    // Assert: each either logged in or was told to come back in 1 s
    let mut statuses = Vec::new();
    for response in responses {
        let response = response.unwrap();
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(response.headers()["retry-after"], "1");
            assert_eq!(error_code(&response.json::<Value>().await.unwrap()), "UNAVAILABLE");
        } else {
            assert_eq!(status, StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            assert!(body["data"]["login"]["token"].is_string(), "{body}");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::SERVICE_UNAVAILABLE), "{statuses:?}");
}
