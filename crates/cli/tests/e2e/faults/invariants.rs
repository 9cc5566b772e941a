//! What must hold after every fault scenario, checked against the databases and Temporal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use sqlx::Connection as _;

use crate::world::World;

/// A `startReport` the API acknowledged: the report must exist, in its tenant only, and end.
#[derive(Clone, Debug)]
pub struct Acknowledged {
    /// Index of the tenant (0..3) of the user who started it.
    pub tenant: usize,
    /// That user's token.
    pub token: String,
    /// The returned report id.
    pub report: String,
}

impl Acknowledged {
    /// Starts a report as `token`'s user of `tenant`.
    pub async fn start(world: &World, tenant: usize, token: &str) -> Self {
        Self {
            tenant,
            token: token.to_owned(),
            report: world.start_report(token).await,
        }
    }
}

/// What a scenario's run looked like, for the fault table.
#[derive(Debug)]
pub struct Outcome {
    /// From the first check until every acknowledged report was final.
    pub until_final: Duration,
    /// Contents whose workflow ran more than once (allowed: at least once delivery).
    pub duplicate_runs: usize,
}

/// Waits until every acknowledged report is final, then asserts the invariants of the fault
/// suite:
/// - exactly one report and three contents (one per source) in the right tenant database, and
///   nothing of it in another tenant's database;
/// - every content final;
/// - `finished_at` set once (unchanged between two reads) and not before its last content;
/// - at most one successful workflow run per content.
///
/// Returns how long the reports took to become final and how many contents ran twice.
pub async fn assert_invariants(world: &World, acknowledged: &[Acknowledged], timeout: Duration) -> Outcome {
    let started = Instant::now();
    for ack in acknowledged {
        world
            .wait_final(&ack.token, &ack.report, timeout.saturating_sub(started.elapsed()))
            .await;
    }
    let until_final = started.elapsed();

    let mut first_finish = HashMap::new();
    let mut contents_by_tenant: HashMap<usize, Vec<String>> = HashMap::new();
    for (tenant, db) in world.dbs.tenants.iter().enumerate() {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        for ack in acknowledged {
            let reports: i64 = sqlx::query_scalar("SELECT count(*) FROM report WHERE id = $1::uuid")
                .bind(&ack.report)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            if ack.tenant != tenant {
                assert_eq!(
                    reports, 0,
                    "report {} of tenant {} found in tenant {tenant}",
                    ack.report, ack.tenant
                );
                continue;
            }
            assert_eq!(reports, 1, "report {} missing from its tenant {tenant}", ack.report);
            let contents: Vec<(String, String, String, Option<f64>)> = sqlx::query_as(
                "SELECT c.id::text, c.source, c.status::text,
                        extract(epoch FROM r.finished_at - max(c.last_run_at) OVER ())::float8
                 FROM report_contents c JOIN report r ON r.id = c.report_id
                 WHERE c.report_id = $1::uuid ORDER BY c.source",
            )
            .bind(&ack.report)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let sources: Vec<&str> = contents.iter().map(|(_, source, _, _)| source.as_str()).collect();
            assert_eq!(
                sources,
                ["source_1", "source_2", "source_3"],
                "contents of report {}",
                ack.report
            );
            for (id, source, status, finish_lag) in &contents {
                assert_ne!(
                    status, "in_progress",
                    "content {id} ({source}) of report {} not final",
                    ack.report
                );
                let lag = finish_lag.unwrap_or_else(|| panic!("report {} final without finished_at", ack.report));
                // finished_at is set by the CDC worker after it saw the last content change.
                assert!(
                    lag >= -0.001,
                    "report {} finished {lag:.3} s before its last content",
                    ack.report
                );
            }
            contents_by_tenant
                .entry(tenant)
                .or_default()
                .extend(contents.into_iter().map(|(id, ..)| id));
            first_finish.insert(ack.report.clone(), finished_at(&mut conn, &ack.report).await);
        }
    }

    let temporal = world.temporal_client().await;
    let mut duplicate_runs = 0;
    for (tenant, ids) in &contents_by_tenant {
        for id in ids {
            let workflow = liquidity_workflows::workflow_id(world.dbs.tenants[*tenant].id, id.parse().unwrap());
            let runs: Vec<_> = temporal
                .list_workflows(format!("WorkflowId = '{workflow}'"), Default::default())
                .collect()
                .await;
            let completed: Vec<_> = temporal
                .list_workflows(
                    format!("WorkflowId = '{workflow}' AND ExecutionStatus = 'Completed'"),
                    Default::default(),
                )
                .collect()
                .await;
            assert!(completed.len() <= 1, "{workflow} completed {} times", completed.len());
            if runs.len() > 1 {
                duplicate_runs += 1;
            }
        }
    }

    // finished_at is written once: the same value on a second read, after everything above.
    for ack in acknowledged {
        let mut conn = sqlx::PgConnection::connect(&world.dbs.tenants[ack.tenant].url)
            .await
            .unwrap();
        assert_eq!(
            finished_at(&mut conn, &ack.report).await,
            first_finish[&ack.report],
            "finished_at of report {} changed",
            ack.report
        );
    }
    let outcome = Outcome {
        until_final,
        duplicate_runs,
    };
    eprintln!(
        "invariants hold for {} reports: final within {:.1} s, {} contents with duplicate workflow runs",
        acknowledged.len(),
        outcome.until_final.as_secs_f64(),
        outcome.duplicate_runs
    );
    outcome
}

async fn finished_at(conn: &mut sqlx::PgConnection, report: &str) -> Option<String> {
    sqlx::query_scalar("SELECT finished_at::text FROM report WHERE id = $1::uuid")
        .bind(report)
        .fetch_one(conn)
        .await
        .unwrap()
}
