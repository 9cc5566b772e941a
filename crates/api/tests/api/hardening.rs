use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, spawn_app};

#[tokio::test]
async fn batched_requests_are_refused() {
    // Arrange
    let app = spawn_app().await;
    let batch = json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]);

    // Act
    let response = app.http.post(app.url("/graphql")).json(&batch).send().await.unwrap();

    // Assert
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn get_serves_graphiql_and_never_executes_an_operation() {
    // Arrange
    let app = spawn_app().await;
    let mutation = format!(
        r#"mutation {{ register(input: {{tenantId: "{}", username: "mallory", password: "correct-horse-battery", taxId: "T"}}) {{ token }} }}"#,
        app.dbs.tenants[0].id
    );

    // Act
    let url = reqwest::Url::parse_with_params(&app.url("/graphql"), &[("query", mutation)]).unwrap();
    let response = app.http.get(url).send().await.unwrap();
    let html = response.text().await.unwrap();

    // Assert: GraphiQL came back and no user was created
    assert!(html.contains("graphiql"), "{html}");
    let login = app
        .graphql(
            crate::helpers::LOGIN,
            json!({ "input": { "username": "mallory", "password": "correct-horse-battery" } }),
            None,
        )
        .await;
    assert_eq!(error_code(&login), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let huge = json!({ "query": format!("{{ __typename }} #{}", "x".repeat(liquidity_api::server::BODY_LIMIT_BYTES)) });

    // Act
    let response = app.http.post(app.url("/graphql")).json(&huge).send().await.unwrap();

    // Assert
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_query_nested_too_deep_is_refused() {
    // Arrange: introspection nested past MAX_DEPTH
    let app = spawn_app().await;
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } } }";

    // Act
    let body = app.graphql(deep, json!({}), None).await;

    // Assert
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{body}"
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready.headers().contains_key("x-request-id"));
}
