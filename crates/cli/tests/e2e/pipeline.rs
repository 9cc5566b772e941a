use std::time::{Duration, Instant};

use serde_json::json;

use crate::world::{Options, World};

#[tokio::test]
async fn a_report_goes_from_in_progress_to_completed_through_the_whole_pipeline() {
    // Arrange
    let world = World::start(Options::default()).await;
    let token = world.user(0).await;

    // Act
    let started = Instant::now();
    let id = world.start_report(&token).await;
    let first_status = world.status(&token, &id).await;
    let status = world.wait_final(&token, &id, Duration::from_secs(90)).await;
    eprintln!("startReport -> completed in {:?}", started.elapsed());

    // Assert
    assert_eq!(first_status, "in_progress");
    assert_eq!(status, "completed");
    let report = world.report(&token, &id).await;
    assert!(report["finishedAt"].is_string());
    for content in report["contents"].as_array().unwrap() {
        assert_eq!(content["status"], "completed", "{content}");
        let document: serde_json::Value = serde_json::from_str(content["data"].as_str().unwrap()).unwrap();
        assert_eq!(document["source"], content["source"]);
        let workflow = liquidity_workflows::workflow_id(
            world.dbs.tenants[0].id,
            content["id"].as_str().unwrap().parse().unwrap(),
        );
        assert_eq!(
            world.workflow_runs(&workflow).await,
            1,
            "one workflow run for {workflow}"
        );
    }
}

#[tokio::test]
async fn a_permanently_broken_source_fails_its_content_and_the_report_while_the_others_complete() {
    // Arrange: source_2 answers only malformed bodies; two bad answers are tolerated
    let world = World::start(Options {
        simulator: json!({ "source_2": { "malformedRate": 1.0 } }),
        workflow_env: vec![("SOURCE_MAX_BAD_ANSWERS", "2".to_owned())],
        ..Options::default()
    })
    .await;
    let token = world.user(1).await;

    // Act
    let id = world.start_report(&token).await;
    let status = world.wait_final(&token, &id, Duration::from_secs(90)).await;

    // Assert
    assert_eq!(status, "failed");
    let report = world.report(&token, &id).await;
    assert!(report["finishedAt"].is_string());
    let contents = report["contents"].as_array().unwrap();
    let by_source = |source: &str| contents.iter().find(|c| c["source"] == source).unwrap();
    assert_eq!(by_source("source_1")["status"], "completed");
    assert_eq!(by_source("source_3")["status"], "completed");
    let broken = by_source("source_2");
    assert_eq!(broken["status"], "failed");
    assert!(
        broken["data"].as_str().unwrap().contains("malformed"),
        "reason recorded: {broken}"
    );
}
