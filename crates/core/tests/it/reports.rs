use liquidity_core::reports::{self, REPORT_SOURCES, ReportStatus};
use liquidity_core::{ReportId, UserId};

use crate::helpers::{OneTenant, one_tenant};

#[tokio::test]
async fn starting_a_report_writes_it_with_one_in_progress_content_per_source() {
    // Arrange
    let OneTenant { tenant, pool, _dbs } = one_tenant(2).await;
    let pool = &pool;
    let user = UserId::new_random();

    // Act
    let id = reports::create_report(pool, tenant, user, &REPORT_SOURCES)
        .await
        .unwrap();

    // Assert
    let report = reports::find_report(pool, tenant, user, id).await.unwrap().unwrap();
    assert_eq!(
        (report.tenant_id, report.user_id, report.finished_at),
        (tenant, user, None)
    );
    let contents = reports::list_contents(pool, id).await.unwrap();
    let sources: Vec<&str> = contents.iter().map(|c| c.source.as_str()).collect();
    assert_eq!(sources, REPORT_SOURCES);
    assert!(
        contents
            .iter()
            .all(|c| c.status == ReportStatus::InProgress && c.data.is_none())
    );
}

#[tokio::test]
async fn another_users_report_is_indistinguishable_from_a_missing_one() {
    // Arrange
    let OneTenant { tenant, pool, _dbs } = one_tenant(2).await;
    let pool = &pool;
    let id = reports::create_report(pool, tenant, UserId::new_random(), &REPORT_SOURCES)
        .await
        .unwrap();

    // Act
    let other_user = reports::report_progress(pool, tenant, UserId::new_random(), id)
        .await
        .unwrap();
    let missing = reports::report_progress(pool, tenant, UserId::new_random(), ReportId::new_random())
        .await
        .unwrap();

    // Assert
    assert_eq!(other_user, None);
    assert_eq!(missing, None);
}

#[tokio::test]
async fn a_final_content_never_moves_again() {
    // Arrange
    let OneTenant { tenant, pool, _dbs } = one_tenant(2).await;
    let pool = &pool;
    let id = reports::create_report(pool, tenant, UserId::new_random(), &REPORT_SOURCES)
        .await
        .unwrap();
    let content = reports::list_contents(pool, id).await.unwrap().remove(0);

    // Act
    let first = reports::complete_content(pool, content.id, r#"{"a":1}"#).await.unwrap();
    let retried = reports::complete_content(pool, content.id, r#"{"a":2}"#).await.unwrap();
    let failed_after = reports::fail_content(pool, content.id, "late failure").await.unwrap();
    let touched_after = reports::touch_content(pool, content.id).await.unwrap();

    // Assert
    assert!(first);
    assert!(!retried && !failed_after && !touched_after);
    let stored = reports::find_content(pool, content.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.data.as_deref()),
        (ReportStatus::Completed, Some(r#"{"a":1}"#))
    );
}

#[tokio::test]
async fn finished_at_is_set_once_when_the_last_content_is_final_even_under_concurrent_finishers() {
    // Arrange
    let OneTenant { tenant, pool, _dbs } = one_tenant(10).await;
    let pool = &pool;
    let user = UserId::new_random();
    let id = reports::create_report(pool, tenant, user, &REPORT_SOURCES)
        .await
        .unwrap();
    let contents = reports::list_contents(pool, id).await.unwrap();
    reports::complete_content(pool, contents[0].id, "{}").await.unwrap();
    reports::fail_content(pool, contents[1].id, "broken").await.unwrap();

    // Act 1: not done yet
    let early = reports::finish_report_if_done(pool, id).await.unwrap();
    // Act 2: the last content finishes, then 10 workers race to finish the report
    reports::complete_content(pool, contents[2].id, "{}").await.unwrap();
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { reports::finish_report_if_done(&pool, id).await.unwrap() })
        })
        .collect();
    let results: Vec<_> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // Assert
    assert_eq!(early, None);
    assert_eq!(
        results.iter().filter(|r| r.is_some()).count(),
        1,
        "exactly one worker sets finished_at"
    );
    let progress = reports::report_progress(pool, tenant, user, id).await.unwrap().unwrap();
    assert!(progress.finished_at.is_some());
    assert_eq!(progress.status(), ReportStatus::Failed);
}

#[tokio::test]
async fn the_reconciler_queries_find_stale_contents_and_done_but_unfinished_reports() {
    // Arrange: report A has an untouched content for 2 s; report B is all final, not finished
    let OneTenant { tenant, pool, _dbs } = one_tenant(2).await;
    let pool = &pool;
    let a = reports::create_report(pool, tenant, UserId::new_random(), &["source_1"])
        .await
        .unwrap();
    let b = reports::create_report(pool, tenant, UserId::new_random(), &["source_1"])
        .await
        .unwrap();
    let b_content = reports::list_contents(pool, b).await.unwrap().remove(0);
    reports::complete_content(pool, b_content.id, "{}").await.unwrap();
    sqlx::query("UPDATE report_contents SET last_run_at = now() - interval '2 seconds' WHERE report_id = $1")
        .bind(a)
        .execute(pool)
        .await
        .unwrap();

    // Act
    let stale = reports::stale_in_progress_contents(pool, std::time::Duration::from_secs(1), 100)
        .await
        .unwrap();
    let fresh = reports::stale_in_progress_contents(pool, std::time::Duration::from_secs(60), 100)
        .await
        .unwrap();
    let done = reports::unfinished_done_reports(pool, 100).await.unwrap();

    // Assert
    assert_eq!(stale.iter().map(|c| c.report_id).collect::<Vec<_>>(), [a]);
    assert!(fresh.is_empty());
    assert_eq!(done, [b]);
}
