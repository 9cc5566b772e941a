//! `reportUpdated` over a real graphql-ws socket, fed by the tenant database's NOTIFY.
//!
//! The tests move a report the way the workers do (the same repository functions on the
//! tenant database), so every update a subscriber sees came through the trigger, `LISTEN` and
//! the fan-out, not from the API itself.

use std::time::Duration;

use liquidity_core::ReportId;
use liquidity_core::reports;
use liquidity_test_support::graphql_ws::GraphqlWs;
use liquidity_test_support::wait_until;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::helpers::{START_REPORT, TestApp, error_code, spawn_app};

const REPORT_UPDATED: &str = "subscription($id: ID!) {
  reportUpdated(id: $id) { id status finishedAt contents { source status data } }
}";

impl TestApp {
    fn ws_url(&self) -> String {
        format!("ws://{}/graphql", self.addr)
    }

    async fn start_report(&self, token: &str) -> String {
        let body = self.graphql(START_REPORT, json!({}), Some(token)).await;
        body["data"]["startReport"]["reportId"]
            .as_str()
            .unwrap_or_else(|| panic!("startReport failed: {body}"))
            .to_owned()
    }

    /// Completes one content of the report as the workflow worker does.
    async fn complete(&self, token: &str, report: &str, source: &str) {
        let pool = self.registry.pool(self.claims(token).tenant_id).await.unwrap();
        let report_id: ReportId = report.parse().unwrap();
        let contents = reports::list_contents(pool, report_id).await.unwrap();
        let content = contents.iter().find(|c| c.source == source).unwrap();
        assert!(
            reports::complete_content(pool, content.id, &format!("{{\"source\":\"{source}\"}}"))
                .await
                .unwrap()
        );
    }

    /// Sets `finishedAt` as the CDC worker does.
    async fn finish(&self, token: &str, report: &str) {
        let pool = self.registry.pool(self.claims(token).tenant_id).await.unwrap();
        assert!(
            reports::finish_report_if_done(pool, report.parse().unwrap())
                .await
                .unwrap()
                .is_some()
        );
    }

    /// Closes the tenant pools, waiting for the connections still being opened or used by
    /// the subscriptions' reads. Without it, a connection left half-authenticated when the test's
    /// runtime stops holds every `DROP DATABASE` of the server (this test's cleanup and other
    /// tests') until PostgreSQL's `authentication_timeout` (60 s).
    async fn close_pools(&self) {
        self.registry.close().await;
    }

    /// A poll of the workflow worker: `last_run_at` only.
    async fn touch(&self, token: &str, report: &str, source: &str) {
        let pool = self.registry.pool(self.claims(token).tenant_id).await.unwrap();
        let contents = reports::list_contents(pool, report.parse().unwrap()).await.unwrap();
        let content = contents.iter().find(|c| c.source == source).unwrap();
        assert!(reports::touch_content(pool, content.id).await.unwrap());
    }
}

/// The report of a `next` message, or a panic with the message.
fn report_of(message: &Value) -> &Value {
    assert_eq!(message["type"], "next", "{message}");
    let report = &message["payload"]["data"]["reportUpdated"];
    assert!(report.is_object(), "{message}");
    report
}

fn statuses(report: &Value) -> Vec<&str> {
    report["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect()
}

/// The first error code of a `next` message carrying errors.
fn refusal_of(message: &Value) -> &str {
    assert_eq!(message["type"], "next", "{message}");
    error_code(&message["payload"])
}

#[tokio::test]
async fn a_subscriber_gets_the_report_now_then_each_change_until_it_is_final_then_completes() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user(0, "ada").await;
    let id = app.start_report(&user.token).await;
    let mut client = GraphqlWs::connect(&app.ws_url(), &user.token).await;

    // Act + Assert: the current state first
    client.subscribe("1", REPORT_UPDATED, json!({ "id": id })).await;
    let now = client.next_of("1").await;
    assert_eq!(report_of(&now)["status"], "in_progress");
    assert_eq!(statuses(report_of(&now)), ["in_progress"; 3]);

    // a poll (last_run_at only) sends nothing: the next message is the completion that follows it
    app.touch(&user.token, &id, "source_2").await;
    app.complete(&user.token, &id, "source_1").await;
    let first = client.next_of("1").await;
    assert_eq!(statuses(report_of(&first)), ["completed", "in_progress", "in_progress"]);
    assert_eq!(report_of(&first)["contents"][0]["data"], "{\"source\":\"source_1\"}");

    app.complete(&user.token, &id, "source_2").await;
    let second = client.next_of("1").await;
    assert_eq!(statuses(report_of(&second)), ["completed", "completed", "in_progress"]);

    // every content final, but the report is in progress until finishedAt is set
    app.complete(&user.token, &id, "source_3").await;
    let third = client.next_of("1").await;
    assert_eq!(statuses(report_of(&third)), ["completed"; 3]);
    assert_eq!(report_of(&third)["status"], "in_progress");

    app.finish(&user.token, &id).await;
    let last = client.next_of("1").await;
    assert_eq!(report_of(&last)["status"], "completed");
    assert!(report_of(&last)["finishedAt"].is_string());
    assert_eq!(client.next_of("1").await["type"], "complete");
}

#[tokio::test]
async fn a_subscriber_to_a_final_report_gets_it_once_and_the_subscription_completes() {
    // Arrange: a report that completed before anyone subscribed
    let app = spawn_app().await;
    let user = app.user(1, "late").await;
    let id = app.start_report(&user.token).await;
    for source in reports::REPORT_SOURCES {
        app.complete(&user.token, &id, source).await;
    }
    app.finish(&user.token, &id).await;
    let mut client = GraphqlWs::connect(&app.ws_url(), &user.token).await;

    // Act
    client.subscribe("late", REPORT_UPDATED, json!({ "id": id })).await;

    // Assert
    assert_eq!(report_of(&client.next_of("late").await)["status"], "completed");
    assert_eq!(client.next_of("late").await["type"], "complete");
}

#[tokio::test]
async fn someone_elses_or_a_missing_report_is_not_found_and_the_socket_stays_usable() {
    // Arrange: alice (t1) owns a report; bob is in t1 too, carol in t2
    let app = spawn_app().await;
    let alice = app.user(0, "alice").await;
    let bob = app.user(0, "bob").await;
    let carol = app.user(1, "carol").await;
    let alices = app.start_report(&alice.token).await;
    let bobs = app.start_report(&bob.token).await;
    let mut bob_socket = GraphqlWs::connect(&app.ws_url(), &bob.token).await;
    let mut carol_socket = GraphqlWs::connect(&app.ws_url(), &carol.token).await;

    // Act
    bob_socket
        .subscribe("other-user", REPORT_UPDATED, json!({ "id": alices }))
        .await;
    carol_socket
        .subscribe("other-tenant", REPORT_UPDATED, json!({ "id": alices }))
        .await;
    let missing = uuid::Uuid::new_v4().to_string();
    bob_socket
        .subscribe("missing", REPORT_UPDATED, json!({ "id": missing }))
        .await;

    // Assert: the same NOT_FOUND whatever the reason, each followed by `complete`
    async fn assert_not_found(socket: &mut GraphqlWs, id: &str) {
        let refused = socket.next_of(id).await;
        assert_eq!(refusal_of(&refused), "NOT_FOUND", "{id}");
        assert_eq!(refused["payload"]["errors"][0]["message"], "report not found");
        assert_eq!(socket.next_of(id).await["type"], "complete", "{id}");
    }
    assert_not_found(&mut bob_socket, "other-user").await;
    assert_not_found(&mut carol_socket, "other-tenant").await;
    assert_not_found(&mut bob_socket, "missing").await;
    // ... and bob's own report on the same socket is served
    bob_socket.subscribe("own", REPORT_UPDATED, json!({ "id": bobs })).await;
    assert_eq!(report_of(&bob_socket.next_of("own").await)["id"], bobs.as_str());
}

#[tokio::test]
async fn a_connection_holds_at_most_ten_subscriptions_and_a_stopped_one_frees_its_place() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user(0, "greedy").await;
    let id = app.start_report(&user.token).await;
    let mut client = GraphqlWs::connect(&app.ws_url(), &user.token).await;
    for n in 0..10 {
        client
            .subscribe(&n.to_string(), REPORT_UPDATED, json!({ "id": id }))
            .await;
        report_of(&client.next_of(&n.to_string()).await);
    }

    // Act
    client.subscribe("11th", REPORT_UPDATED, json!({ "id": id })).await;
    let refused = client.next_of("11th").await;
    client.stop("0").await;
    client.subscribe("again", REPORT_UPDATED, json!({ "id": id })).await;
    let admitted = client.next_of("again").await;

    // Assert
    assert_eq!(refusal_of(&refused), "TOO_MANY_SUBSCRIPTIONS");
    let extensions = &refused["payload"]["errors"][0]["extensions"];
    assert_eq!(
        (extensions["scope"].as_str(), extensions["limit"].as_u64()),
        (Some("connection"), Some(10))
    );
    assert_eq!(report_of(&admitted)["id"], id.as_str());
    app.close_pools().await;
}

#[tokio::test]
async fn a_client_that_disconnects_midway_gives_back_its_subscriptions() {
    // Arrange: the user holds 20 subscriptions, their bound, on two sockets
    let app = spawn_app().await;
    let user = app.user(0, "tabs").await;
    let id = app.start_report(&user.token).await;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut client = GraphqlWs::connect(&app.ws_url(), &user.token).await;
        for n in 0..10 {
            client
                .subscribe(&n.to_string(), REPORT_UPDATED, json!({ "id": id }))
                .await;
            report_of(&client.next_of(&n.to_string()).await);
        }
        sockets.push(client);
    }
    let mut third = GraphqlWs::connect(&app.ws_url(), &user.token).await;
    third.subscribe("over", REPORT_UPDATED, json!({ "id": id })).await;
    let refused = third.next_of("over").await;
    assert_eq!(refusal_of(&refused), "TOO_MANY_SUBSCRIPTIONS");
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["scope"], "user");

    // Act: one socket goes away without a word (no complete, no close frame)
    drop(sockets.pop());

    // Assert: its ten places come back, and the remaining subscribers still get updates
    let mut attempt = 0;
    let third = tokio::sync::Mutex::new(third);
    wait_until(
        Duration::from_secs(10),
        "the disconnected socket's places to come back",
        || {
            attempt += 1;
            let (third, id, name) = (&third, id.clone(), format!("retry-{attempt}"));
            async move {
                let mut third = third.lock().await;
                third.subscribe(&name, REPORT_UPDATED, json!({ "id": id })).await;
                third.next_of(&name).await["payload"]["data"]["reportUpdated"].is_object()
            }
        },
    )
    .await;
    app.complete(&user.token, &id, "source_1").await;
    let update = sockets[0].next_of("9").await;
    assert_eq!(statuses(report_of(&update))[0], "completed");
    app.close_pools().await;
}

#[tokio::test]
async fn a_change_made_while_the_listener_was_disconnected_is_sent_once_it_listens_again() {
    // Arrange: a subscriber, and the admin on the tenant's database (a superuser, so the
    // connection limit below does not apply to it)
    let app = spawn_app().await;
    let user = app.user(0, "outage").await;
    let id = app.start_report(&user.token).await;
    let mut client = GraphqlWs::connect(&app.ws_url(), &user.token).await;
    client.subscribe("1", REPORT_UPDATED, json!({ "id": id })).await;
    report_of(&client.next_of("1").await);
    let database = &app.dbs.tenants[0].database;
    let mut admin = sqlx::PgConnection::connect(&liquidity_test_support::database_url(database))
        .await
        .unwrap();

    // Act: cut the API's LISTEN connection and keep it from coming back, change the report
    // while nobody listens (its NOTIFY is lost), then let the API reconnect
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{database}" CONNECTION LIMIT 0"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    // Every connection of the API goes, idle pool connections too (the listener would take one
    // of them to listen again); repeated until none is left, as the listener may move to an
    // idle one while the others are being cut.
    let mut listener_cut = false;
    for _ in 0..20 {
        let (pids, listening): (Option<Vec<i32>>, Option<bool>) = sqlx::query_as(
            "SELECT array_agg(pid), bool_or(query = 'LISTEN \"report_updated\"')
             FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        let Some(pids) = pids else { break };
        listener_cut |= listening.unwrap_or(false);
        sqlx::query("SELECT pg_terminate_backend(pid, 10000) FROM unnest($1::int[]) AS pid")
            .bind(&pids)
            .execute(&mut admin)
            .await
            .unwrap();
    }
    // Nobody else is connected when the change commits, so its NOTIFY reaches no one.
    let mut gap = admin.begin().await.unwrap();
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut *gap)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE report_contents SET status = 'completed', data = 'during the gap'
         WHERE report_id = $1::uuid AND source = 'source_3'",
    )
    .bind(&id)
    .execute(&mut *gap)
    .await
    .unwrap();
    gap.commit().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{database}" CONNECTION LIMIT -1"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    // Assert: the listener was the one cut, and the change missed in the gap still arrives
    assert!(listener_cut, "the listener was not among the connections cut");
    assert_eq!(
        others, 0,
        "a connection of the API was still open when the change committed"
    );
    let update = client.next_of("1").await;
    assert_eq!(
        statuses(report_of(&update)),
        ["in_progress", "in_progress", "completed"]
    );
    assert_eq!(report_of(&update)["contents"][2]["data"], "during the gap");
}

#[tokio::test]
async fn a_socket_without_a_valid_token_is_closed_with_forbidden() {
    // Arrange
    let app = spawn_app().await;

    for payload in [json!({}), json!({ "authorization": "Bearer not-a-jwt" })] {
        let mut client = GraphqlWs::open(&app.ws_url()).await;

        // Act
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;

        // Assert
        assert_eq!(client.closed().await.0, 4403, "{payload}");
    }
}

#[tokio::test]
async fn subscriptions_only_over_the_socket_and_queries_only_over_http() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user(0, "mixed").await;
    let id = app.start_report(&user.token).await;
    let mut client = GraphqlWs::connect(&app.ws_url(), &user.token).await;

    // Act
    let over_http = app
        .graphql(REPORT_UPDATED, json!({ "id": id }), Some(&user.token))
        .await;
    client.subscribe("query", "{ me { id } }", json!({})).await;
    let query_over_ws = client.next_of("query").await;
    let two = "subscription($id: ID!) { a: reportUpdated(id: $id) { id } b: reportUpdated(id: $id) { id } }";
    client.subscribe("two", two, json!({ "id": id })).await;
    let two_fields = client.next_of("two").await;

    // Assert
    assert_eq!(error_code(&over_http), "OPERATION_REFUSED");
    assert_eq!(over_http["errors"][0]["extensions"]["reason"], "transport");
    assert_eq!(refusal_of(&query_over_ws), "OPERATION_REFUSED");
    assert_eq!(
        query_over_ws["payload"]["errors"][0]["extensions"]["reason"],
        "transport"
    );
    assert_eq!(refusal_of(&two_fields), "OPERATION_REFUSED");
    assert_eq!(two_fields["payload"]["errors"][0]["extensions"]["reason"], "rootFields");
}
