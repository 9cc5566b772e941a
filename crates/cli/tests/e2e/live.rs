//! `reportUpdated` end to end: the report's changes come from the workers' writes in the
//! tenant database, through its NOTIFY, to a websocket client of the API process.

use std::time::Duration;

use liquidity_test_support::graphql_ws::GraphqlWs;
use serde_json::{Value, json};

use crate::world::{Options, World};

const REPORT_UPDATED: &str = "subscription($id: ID!) {
  reportUpdated(id: $id) { id status finishedAt contents { source status data } }
}";

/// How many contents of a `reportUpdated` are final.
fn final_contents(report: &Value) -> usize {
    report["contents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "in_progress")
        .count()
}

#[tokio::test]
async fn a_subscriber_follows_a_report_from_start_report_to_completed_while_another_leaves_midway() {
    // Arrange: two sockets of the same user watch one report
    let world = World::start(Options::default()).await;
    let token = world.user(0).await;
    let url = format!("{}/graphql", world.api.replacen("http://", "ws://", 1));
    let mut watcher = GraphqlWs::connect(&url, &token).await;
    let mut leaver = GraphqlWs::connect(&url, &token).await;

    // Act
    let id = world.start_report(&token).await;
    watcher.subscribe("r", REPORT_UPDATED, json!({ "id": id })).await;
    leaver.subscribe("r", REPORT_UPDATED, json!({ "id": id })).await;
    let left_with = leaver.next_of("r").await;
    // The other client goes away without a word while the report is in progress: the
    // watcher of the same report must not lose its updates.
    drop(leaver);
    let mut updates = Vec::new();
    loop {
        let message = watcher.next_of("r").await;
        if message["type"] == "complete" {
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
        updates.push(message["payload"]["data"]["reportUpdated"].clone());
    }

    // Assert: the current state first, then only forward changes, ending with the final report
    assert_eq!(left_with["payload"]["data"]["reportUpdated"]["status"], "in_progress");
    let first = updates.first().unwrap();
    assert_eq!(first["status"], "in_progress");
    assert!(
        updates
            .windows(2)
            .all(|pair| pair[0] != pair[1] && final_contents(&pair[0]) <= final_contents(&pair[1])),
        "every update is a change, forward: {updates:#?}"
    );
    let last = updates.last().unwrap();
    assert_eq!(last["status"], "completed", "{updates:#?}");
    assert!(last["finishedAt"].is_string());
    assert_eq!(final_contents(last), 3);
    assert!(updates.len() >= 2, "at least the start and the end: {updates:#?}");
    // The same final report as a query answers, and it was the CDC path that finished it.
    assert_eq!(world.wait_final(&token, &id, Duration::from_secs(5)).await, "completed");
    assert_eq!(world.report(&token, &id).await["finishedAt"], last["finishedAt"]);
    assert!(
        world.reconciler_repairs().is_empty(),
        "{:?}",
        world.reconciler_repairs()
    );
}
