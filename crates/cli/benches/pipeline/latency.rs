//! `latency`: commit -> workflow start and startReport -> finishedAt.

use std::time::Duration;

use serde_json::json;

use crate::stats::*;
use crate::world::{Options, World};

/// Commit -> workflow start, and startReport -> finishedAt, with sources that complete at once.
pub async fn run() {
    const REPORTS: usize = 60;
    let instant = json!({ "completeAfter": "0ms", "latency": "1ms" });
    let world = World::start(Options {
        simulator: json!({ "source_1": instant, "source_2": instant, "source_3": instant }),
        ..Options::default()
    })
    .await;
    let token = world.user(0).await;
    // Warm-up: first workflow, first pool connections.
    let warm = world.start_report(&token).await;
    world.wait_final(&token, &warm, Duration::from_secs(60)).await;

    // One report every 200 ms: latency, not throughput.
    let mut ids = Vec::new();
    for _ in 0..REPORTS {
        ids.push(world.start_report(&token).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        assert_eq!(
            world.wait_final(&token, id, Duration::from_secs(120)).await,
            "completed"
        );
    }

    let mut conn = world.dbs.connect(0).await;
    let to_finish: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM finished_at - started_at)::float8 FROM report WHERE id = ANY($1::uuid[])",
    )
    .bind(&ids)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    // Where the time goes: until the last content is stored, then until finishedAt is set.
    let phases: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM max(c.last_run_at) - r.started_at)::float8,
                extract(epoch FROM r.finished_at - max(c.last_run_at))::float8
         FROM report r JOIN report_contents c ON c.report_id = r.id
         WHERE r.id = ANY($1::uuid[]) GROUP BY r.id",
    )
    .bind(&ids)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    print_seconds(
        "startReport -> last content stored",
        &mut phases.iter().map(|p| p.0).collect::<Vec<_>>(),
    );
    print_seconds(
        "last content stored -> finishedAt",
        &mut phases.iter().map(|p| p.1).collect::<Vec<_>>(),
    );
    let contents: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT c.id, c.created_at FROM report_contents c WHERE c.report_id = ANY($1::uuid[])")
            .bind(&ids)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let client = world.temporal_client().await;
    let mut to_workflow = Vec::new();
    let mut history = Vec::new();
    for (content_id, created_at) in contents {
        let workflow_id = liquidity_workflows::workflow_id(world.dbs.tenants[0].id, content_id.into());
        let description = client
            .get_workflow_handle::<liquidity_workflows::FetchReportContentWorkflow>(workflow_id)
            .describe(Default::default())
            .await
            .unwrap();
        let started: std::time::SystemTime = description.start_time().expect("a started workflow");
        let started = chrono::DateTime::<chrono::Utc>::from(started);
        to_workflow.push((started - created_at).as_seconds_f64());
        history.push(description.history_length() as f64);
    }
    history.sort_by(f64::total_cmp);
    println!(
        "workflow history length: p50 {} events, max {} events",
        percentile(&history, 0.5),
        history.last().copied().unwrap_or_default()
    );
    print_seconds("commit -> workflow start", &mut to_workflow);
    print_seconds("startReport -> finishedAt", &mut to_finish.clone());
}
