use serde_json::json;

use crate::helpers::{LOGIN, ME, error_code, spawn_app};

#[tokio::test]
async fn register_returns_the_user_and_a_token_carrying_tenant_tax_id_user_id_and_username() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let body = app.register(0, "alice", "correct-horse-battery").await;

    // Assert
    let payload = &body["data"]["register"];
    assert_eq!(payload["user"]["username"], "alice");
    assert_eq!(payload["user"]["taxId"], "TAX-0001");
    assert_eq!(payload["user"]["tenantId"], app.dbs.tenants[0].id.to_string());
    let claims = app.claims(payload["token"].as_str().unwrap());
    assert_eq!(claims.tenant_id, app.dbs.tenants[0].id);
    assert_eq!(claims.user_id.to_string(), payload["user"]["id"].as_str().unwrap());
    assert_eq!(
        (claims.username.as_str(), claims.tax_id.as_str()),
        ("alice", "TAX-0001")
    );
}

#[tokio::test]
async fn the_stored_password_is_an_argon2id_hash_never_the_password() {
    // Arrange
    let app = spawn_app().await;

    // Act
    app.user(0, "alice").await;

    // Assert
    let mut catalog = sqlx::PgConnection::connect(&app.dbs.catalog_url()).await.unwrap();
    let stored: String = sqlx::query_scalar(r#"SELECT password FROM "user""#)
        .fetch_one(&mut catalog)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
    assert!(!stored.contains("correct-horse-battery"));
}

#[tokio::test]
async fn login_with_the_right_password_returns_a_token_that_me_accepts() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user(1, "bob").await;

    // Act
    let login = app
        .graphql(
            LOGIN,
            json!({ "input": { "username": "BOB", "password": "correct-horse-battery" } }),
            None,
        )
        .await;
    let token = login["data"]["login"]["token"].as_str().unwrap();
    let me = app.graphql(ME, json!({}), Some(token)).await;

    // Assert: usernames compare case-insensitively; me is the same user in the same tenant
    assert_eq!(me["data"]["me"]["id"], user.id.as_str());
    assert_eq!(me["data"]["me"]["tenantId"], app.dbs.tenants[1].id.to_string());
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    // Arrange
    let app = spawn_app().await;
    app.user(0, "carol").await;

    // Act
    let wrong_password = app
        .graphql(
            LOGIN,
            json!({ "input": { "username": "carol", "password": "not-the-password" } }),
            None,
        )
        .await;
    let unknown_user = app
        .graphql(
            LOGIN,
            json!({ "input": { "username": "nobody", "password": "not-the-password" } }),
            None,
        )
        .await;

    // Assert
    assert_eq!(error_code(&wrong_password), "UNAUTHENTICATED");
    assert_eq!(
        wrong_password["errors"][0]["message"],
        unknown_user["errors"][0]["message"]
    );
    assert_eq!(
        wrong_password["errors"][0]["extensions"],
        unknown_user["errors"][0]["extensions"]
    );
}

#[tokio::test]
async fn a_username_is_taken_across_tenants_and_case_insensitively() {
    // Arrange
    let app = spawn_app().await;
    app.user(0, "dave").await;

    // Act
    let same_tenant = app.register(0, "dave", "correct-horse-battery").await;
    let other_tenant_other_case = app.register(1, "DaVe", "correct-horse-battery").await;

    // Assert
    assert_eq!(error_code(&same_tenant), "CONFLICT");
    assert_eq!(error_code(&other_tenant_other_case), "CONFLICT");
}

#[tokio::test]
async fn every_invalid_field_of_a_registration_is_reported_at_once() {
    // Arrange
    let app = spawn_app().await;
    let input = json!({ "tenantId": uuid::Uuid::new_v4(), "username": "a!", "password": "short", "taxId": "TAX 1" });

    // Act
    let body = app
        .graphql(crate::helpers::REGISTER, json!({ "input": input }), None)
        .await;

    // Assert
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    let mut fields: Vec<&str> = body["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    fields.dedup();
    assert_eq!(fields, ["password", "taxId", "tenantId", "username"]);
}

#[tokio::test]
async fn a_malformed_tenant_id_is_bad_input() {
    let app = spawn_app().await;
    let input = json!({ "tenantId": "t1", "username": "erin", "password": "correct-horse-battery", "taxId": "T-1" });
    let body = app
        .graphql(crate::helpers::REGISTER, json!({ "input": input }), None)
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(
        body["errors"][0]["extensions"]["fields"][0]["field"], "tenantId",
        "{body}"
    );
}

#[tokio::test]
async fn me_needs_a_valid_token() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user(0, "frank").await;
    let mut tampered = user.token.clone();
    tampered.pop();
    tampered.push(if user.token.ends_with('A') { 'B' } else { 'A' });

    // Act
    let anonymous = app.graphql(ME, json!({}), None).await;
    let forged = app.graphql(ME, json!({}), Some(&tampered)).await;

    // Assert
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED");
    assert_eq!(error_code(&forged), "UNAUTHENTICATED");
    assert!(forged["data"].is_null());
}

use sqlx::Connection as _;
