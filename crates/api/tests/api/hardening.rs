use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, spawn_app, spawn_app_with};

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
async fn an_operation_nested_too_deep_is_refused_before_it_runs() {
    // Arrange: 9 levels, past MAX_DEPTH
    let app = spawn_app().await;
    let deep = "{ me { a { b { c { d { e { f { g { h } } } } } } } } }";

    // Act
    let body = app.graphql(deep, json!({}), None).await;

    // Assert
    assert!(body["data"].is_null(), "{body}");
    assert_eq!(error_code(&body), "OPERATION_REFUSED");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "depth");
}

#[tokio::test]
async fn the_standard_introspection_query_is_answered() {
    // Arrange: the query graphql-js's getIntrospectionQuery() builds (GraphiQL, codegen)
    let app = spawn_app().await;
    let query = include_str!("../../src/guard/introspection_query.graphql");

    // Act
    let body = app.graphql(query, json!({}), None).await;

    // Assert
    assert!(body["errors"].is_null(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Report"), "{body}");
}

#[tokio::test]
async fn introspection_that_re_expands_types_is_refused() {
    let app = spawn_app().await;
    let body = app
        .graphql(
            "{ __type(name: \"Report\") { fields { type { fields { name } } } } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(error_code(&body), "OPERATION_REFUSED");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "introspection");
}

#[tokio::test]
async fn introspection_and_graphiql_can_be_turned_off() {
    // Arrange
    let app = spawn_app_with(|config| {
        config.settings.introspection = false;
        config.settings.graphiql = false;
    })
    .await;

    // Act
    let introspection = app
        .graphql("{ __schema { queryType { name } } }", json!({}), None)
        .await;
    let graphiql = app.http.get(app.url("/graphql")).send().await.unwrap();
    let typename = app.graphql("{ __typename }", json!({}), None).await;

    // Assert
    assert!(introspection["data"].is_null(), "{introspection}");
    assert_eq!(error_code(&introspection), "OPERATION_REFUSED");
    assert_eq!(introspection["errors"][0]["extensions"]["reason"], "introspection");
    assert_eq!(graphiql.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(typename["data"]["__typename"], "Query");
}

#[tokio::test]
async fn a_safe_request_id_is_kept_and_an_unsafe_one_replaced() {
    // Arrange
    let app = spawn_app().await;
    let get = |id: String| app.http.get(app.url("/healthz")).header("x-request-id", id).send();

    // Act
    let safe = get("client-req-42".to_owned()).await.unwrap();
    let long = get("a".repeat(200)).await.unwrap();
    let markup = get("<script>alert(1)</script>".to_owned()).await.unwrap();

    // Assert
    assert_eq!(safe.headers()["x-request-id"], "client-req-42");
    for replaced in [long, markup] {
        let id = replaced.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
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
