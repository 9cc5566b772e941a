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

#[tokio::test]
async fn thirty_reports_across_three_tenants_all_complete_with_one_workflow_per_content() {
    // Arrange: ten users per tenant; two replicas of each worker, which must give the same
    // result as one (no duplicate workflow, one finishedAt per report)
    let world = World::start(Options {
        replicas: 2,
        ..Options::default()
    })
    .await;
    let mut users = Vec::new();
    for tenant in 0..3 {
        for _ in 0..10 {
            users.push((tenant, world.user(tenant).await));
        }
    }

    // Act: all thirty reports at once
    let started = Instant::now();
    let ids = futures::future::join_all(users.iter().map(|(_, token)| world.start_report(token))).await;
    let statuses = futures::future::join_all(
        users
            .iter()
            .zip(&ids)
            .map(|((_, token), id)| world.wait_final(token, id, Duration::from_secs(180))),
    )
    .await;
    eprintln!("30 reports completed in {:?}", started.elapsed());

    // Assert
    assert!(statuses.iter().all(|s| s == "completed"), "{statuses:?}");
    for ((tenant, token), id) in users.iter().zip(&ids) {
        let report = world.report(token, id).await;
        let finished_at = chrono::DateTime::parse_from_rfc3339(report["finishedAt"].as_str().unwrap()).unwrap();
        for content in report["contents"].as_array().unwrap() {
            let content_id = content["id"].as_str().unwrap().parse().unwrap();
            let workflow = liquidity_workflows::workflow_id(world.dbs.tenants[*tenant].id, content_id);
            assert_eq!(
                world.workflow_runs(&workflow).await,
                1,
                "one workflow run for {workflow}"
            );
            let completed_at = chrono::DateTime::parse_from_rfc3339(content["lastRunAt"].as_str().unwrap()).unwrap();
            assert!(
                finished_at >= completed_at,
                "finishedAt is set when the last content finished"
            );
        }
    }
    // Each report lives in its own tenant's database only
    for (index, _) in world.dbs.tenants.iter().enumerate() {
        let mut conn = world.dbs.connect(index).await;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM report WHERE finished_at IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(count, 10);
    }
}
