use liquidity_core::reports;
use serde_json::json;

use crate::helpers::{REPORT, REPORT_STATUS, START_REPORT, error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn start_report_needs_a_token() {
    let app = spawn_app().await;
    let body = app.graphql(START_REPORT, json!({}), None).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_started_report_lives_in_the_callers_tenant_database_only_and_is_in_progress() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user(1, "grace").await;

    // Act
    let started = app.graphql(START_REPORT, json!({}), Some(&user.token)).await;
    let report_id = started["data"]["startReport"]["reportId"].as_str().unwrap().to_owned();
    let status = app
        .graphql(REPORT_STATUS, json!({ "id": report_id }), Some(&user.token))
        .await;
    let report = app.graphql(REPORT, json!({ "id": report_id }), Some(&user.token)).await;

    // Assert
    assert_eq!(status["data"]["reportStatus"]["status"], "in_progress");
    let report = &report["data"]["report"];
    assert_eq!(report["userId"], user.id.as_str());
    assert_eq!(report["tenantId"], app.dbs.tenants[1].id.to_string());
    assert!(report["finishedAt"].is_null());
    let sources: Vec<&str> = report["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["source_1", "source_2", "source_3"]);
    let count = |tenant: usize| {
        let dbs = &app.dbs;
        async move {
            let mut conn = dbs.connect(tenant).await;
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM report")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!((count(0).await, count(1).await), (0, 1));
}

#[tokio::test]
async fn another_users_report_another_tenants_report_and_a_missing_report_are_all_not_found() {
    // Arrange: alice (t1) owns a report; bob is in t1 too, carol in t2
    let app = spawn_app().await;
    let alice = app.user(0, "alice").await;
    let bob = app.user(0, "bob").await;
    let carol = app.user(1, "carol").await;
    let started = app.graphql(START_REPORT, json!({}), Some(&alice.token)).await;
    let id = started["data"]["startReport"]["reportId"].as_str().unwrap().to_owned();

    for (who, token, report_id) in [
        ("same tenant, other user", &bob.token, id.clone()),
        ("other tenant", &carol.token, id.clone()),
        ("missing", &alice.token, uuid::Uuid::new_v4().to_string()),
    ] {
        // Act
        let status = app
            .graphql(REPORT_STATUS, json!({ "id": report_id }), Some(token))
            .await;
        let report = app.graphql(REPORT, json!({ "id": report_id }), Some(token)).await;

        // Assert: the same error whatever the reason, so ids cannot be probed
        assert_eq!(error_code(&status), "NOT_FOUND", "{who}");
        assert_eq!(error_code(&report), "NOT_FOUND", "{who}");
        assert_eq!(status["errors"][0]["message"], "report not found", "{who}");
    }
}

#[tokio::test]
async fn a_malformed_report_id_is_bad_input_not_an_internal_error() {
    let app = spawn_app().await;
    let user = app.user(0, "heidi").await;
    let body = app
        .graphql(REPORT_STATUS, json!({ "id": "not-a-uuid" }), Some(&user.token))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["fields"][0]["field"], "id");
}

#[tokio::test]
async fn a_report_is_completed_with_every_sources_data_once_finished_at_is_set() {
    // Arrange: a report whose contents all completed, before and after the CDC worker's step
    let app = spawn_app().await;
    let user = app.user(0, "ivan").await;
    let started = app.graphql(START_REPORT, json!({}), Some(&user.token)).await;
    let id = started["data"]["startReport"]["reportId"].as_str().unwrap().to_owned();
    let pool = app.registry.pool(app.dbs.tenants[0].id).await.unwrap();
    for content in reports::list_contents(pool, id.parse().unwrap()).await.unwrap() {
        reports::complete_content(pool, content.id, &format!(r#"{{"source":"{}"}}"#, content.source))
            .await
            .unwrap();
    }
    let before_finish = app.graphql(REPORT_STATUS, json!({ "id": id }), Some(&user.token)).await;

    // Act
    reports::finish_report_if_done(pool, id.parse().unwrap()).await.unwrap();
    let status = app.graphql(REPORT_STATUS, json!({ "id": id }), Some(&user.token)).await;
    let report = app.graphql(REPORT, json!({ "id": id }), Some(&user.token)).await;

    // Assert
    assert_eq!(before_finish["data"]["reportStatus"]["status"], "in_progress");
    assert_eq!(status["data"]["reportStatus"]["status"], "completed");
    let report = &report["data"]["report"];
    assert_eq!(report["status"], "completed");
    assert!(report["finishedAt"].is_string());
    assert_eq!(report["contents"][2]["data"], r#"{"source":"source_3"}"#);
}

#[tokio::test]
async fn an_internal_error_reaches_the_client_as_an_opaque_message() {
    // Arrange: a third tenant whose database does not exist
    let ghost = uuid::Uuid::new_v4();
    let ghost_url = liquidity_test_support::database_url("lqt_ghost_does_not_exist");
    let app = spawn_app_with(|config| {
        config
            .tenants
            .push(json!({ "id": ghost, "name": "ghost", "databaseUrl": ghost_url }));
    })
    .await;
    let mut catalog = sqlx::PgConnection::connect(&app.dbs.catalog_url()).await.unwrap();
    sqlx::query("INSERT INTO tenant (id, name) VALUES ($1, 'ghost')")
        .bind(ghost)
        .execute(&mut catalog)
        .await
        .unwrap();
    let input = json!({ "tenantId": ghost, "username": "judy", "password": "correct-horse-battery", "taxId": "T-1" });
    let registered = app
        .graphql(crate::helpers::REGISTER, json!({ "input": input }), None)
        .await;
    let token = registered["data"]["register"]["token"].as_str().unwrap();

    // Act
    let body = app.graphql(START_REPORT, json!({}), Some(token)).await;

    // Assert
    assert_eq!(error_code(&body), "INTERNAL");
    assert_eq!(body["errors"][0]["message"], "internal error");
    let text = body.to_string();
    for leak in ["lqt_ghost", "does not exist", "127.0.0.1", "postgres", "sqlx"] {
        assert!(!text.contains(leak), "response leaks {leak:?}: {text}");
    }
}

use sqlx::Connection as _;
