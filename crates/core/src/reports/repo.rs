//! SQL of a tenant database. Every function takes the tenant's pool or transaction: which
//! database that is was decided by the caller through the `TenantRegistry`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

use super::{Report, ReportContent, ReportProgress, ReportStatus};
use crate::ids::{ReportContentId, ReportId, TenantId, UserId};
use crate::trace_context::TraceParent;

/// `SELECT <every report_contents column> FROM report_contents <rest>`, as a `&'static str`.
macro_rules! select_contents {
    ($rest:literal) => {
        concat!(
            "SELECT id, report_id, source, status, data, created_at, last_run_at FROM report_contents ",
            $rest
        )
    };
}

/// Writes a report and one in-progress content per source, in one transaction: CDC never sees
/// a report with only some of its contents. Each content stores the `traceparent` of this
/// call's span (NULL with traces off), so the CDC worker's handling of it joins the caller's
/// trace: see [`crate::trace_context`].
///
/// # Errors
/// The database error; nothing is written then.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, user_id = %user_id))]
pub async fn create_report(
    pool: &PgPool,
    tenant_id: TenantId,
    user_id: UserId,
    sources: &[&str],
) -> Result<ReportId, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let report_id: ReportId =
        sqlx::query_scalar("INSERT INTO report (tenant_id, user_id) VALUES ($1, $2) RETURNING id")
            .bind(tenant_id)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("INSERT INTO report_contents (report_id, source, trace_parent) SELECT $1, unnest($2::text[]), $3")
        .bind(report_id)
        .bind(sources)
        .bind(TraceParent::current())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(report_id)
}

/// The report if it exists in this tenant and was started by this user; `None` otherwise, so
/// callers cannot tell another user's report from a missing one.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(report_id = %report_id))]
pub async fn find_report(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    user_id: UserId,
    report_id: ReportId,
) -> Result<Option<Report>, sqlx::Error> {
    sqlx::query_as::<_, Report>(
        "SELECT id, tenant_id, user_id, started_at, finished_at FROM report
         WHERE id = $1 AND user_id = $2 AND tenant_id = $3",
    )
    .bind(report_id)
    .bind(user_id)
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

/// `finished_at` and content statuses of the user's report in one round trip; `None` when it
/// does not exist or belongs to someone else.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(report_id = %report_id))]
pub async fn report_progress(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    user_id: UserId,
    report_id: ReportId,
) -> Result<Option<ReportProgress>, sqlx::Error> {
    let rows: Vec<(Option<DateTime<Utc>>, ReportStatus)> = sqlx::query_as(
        "SELECT r.finished_at, c.status FROM report r JOIN report_contents c ON c.report_id = r.id
         WHERE r.id = $1 AND r.user_id = $2 AND r.tenant_id = $3",
    )
    .bind(report_id)
    .bind(user_id)
    .bind(tenant_id)
    .fetch_all(db)
    .await?;
    let finished_at = match rows.first() {
        None => return Ok(None),
        Some((finished_at, _)) => *finished_at,
    };
    Ok(Some(ReportProgress {
        finished_at,
        contents: rows.into_iter().map(|(_, status)| status).collect(),
    }))
}

/// The contents of a report, ordered by source.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(report_id = %report_id))]
pub async fn list_contents(db: impl PgExecutor<'_>, report_id: ReportId) -> Result<Vec<ReportContent>, sqlx::Error> {
    sqlx::query_as::<_, ReportContent>(select_contents!("WHERE report_id = $1 ORDER BY source"))
        .bind(report_id)
        .fetch_all(db)
        .await
}

/// One content by id.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(content_id = %id))]
pub async fn find_content(db: impl PgExecutor<'_>, id: ReportContentId) -> Result<Option<ReportContent>, sqlx::Error> {
    sqlx::query_as::<_, ReportContent>(select_contents!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Records a successful check that found the source still working: `last_run_at = now()`.
/// Returns `false` when the content is no longer in progress (a retried activity after the
/// content was finished), which changes nothing.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(content_id = %id))]
pub async fn touch_content(db: impl PgExecutor<'_>, id: ReportContentId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE report_contents SET last_run_at = now() WHERE id = $1 AND status = 'in_progress'")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the source's document and marks the content completed, in one update. Only an
/// in-progress content moves, so a retry can never apply twice or overwrite a failure.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(content_id = %id))]
pub async fn complete_content(db: impl PgExecutor<'_>, id: ReportContentId, data: &str) -> Result<bool, sqlx::Error> {
    finalize_content(db, id, ReportStatus::Completed, data).await
}

/// Marks the content failed with the reason in `data`; idempotent like [`complete_content`].
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(content_id = %id))]
pub async fn fail_content(db: impl PgExecutor<'_>, id: ReportContentId, reason: &str) -> Result<bool, sqlx::Error> {
    finalize_content(db, id, ReportStatus::Failed, reason).await
}

async fn finalize_content(
    db: impl PgExecutor<'_>,
    id: ReportContentId,
    status: ReportStatus,
    data: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE report_contents SET status = $2, data = $3, last_run_at = now()
         WHERE id = $1 AND status = 'in_progress'",
    )
    .bind(id)
    .bind(status)
    .bind(data)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets `finished_at = now()` if every content of the report is final and it was not set yet.
///
/// One statement, so it is race-free: of two workers that both see the last content finish,
/// the second one's update re-checks `finished_at IS NULL` on the row the first one wrote and
/// changes nothing. Returns the time it set, or `None` when there was nothing to do.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(report_id = %report_id))]
pub async fn finish_report_if_done(
    db: impl PgExecutor<'_>,
    report_id: ReportId,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE report r SET finished_at = now()
         WHERE r.id = $1 AND r.finished_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM report_contents c WHERE c.report_id = r.id AND c.status = 'in_progress')
         RETURNING r.finished_at",
    )
    .bind(report_id)
    .fetch_optional(db)
    .await
}

/// In-progress contents that no workflow has checked for `idle_for`: candidates whose
/// workflow may never have started (lost CDC message). Oldest first, at most `limit`.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all)]
pub async fn stale_in_progress_contents(
    db: impl PgExecutor<'_>,
    idle_for: Duration,
    limit: i64,
) -> Result<Vec<ReportContent>, sqlx::Error> {
    sqlx::query_as::<_, ReportContent>(select_contents!(
        "WHERE status = 'in_progress' AND last_run_at < now() - make_interval(secs => $1)
         ORDER BY last_run_at LIMIT $2"
    ))
    .bind(idle_for.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Reports whose contents are all final but whose `finished_at` is still null (lost CDC
/// message). At most `limit`.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all)]
pub async fn unfinished_done_reports(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<ReportId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT r.id FROM report r
         WHERE r.finished_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM report_contents c WHERE c.report_id = r.id AND c.status = 'in_progress')
         ORDER BY r.started_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// In-progress contents that no workflow has checked for `idle_for`, by id after `after`
/// (exclusive; `None` = from the start), at most `limit`: one page of a keyset walk over the
/// whole stale set. Unlike [`stale_in_progress_contents`] (oldest first), a walk by id reaches
/// every stale row in turn, so rows that stay stale (their repair fails) cannot starve newer
/// ones.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all)]
pub async fn stale_in_progress_contents_page(
    db: impl PgExecutor<'_>,
    idle_for: Duration,
    after: Option<ReportContentId>,
    limit: i64,
) -> Result<Vec<ReportContent>, sqlx::Error> {
    sqlx::query_as::<_, ReportContent>(select_contents!(
        "WHERE status = 'in_progress' AND last_run_at < now() - make_interval(secs => $1)
           AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(idle_for.as_secs_f64())
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// In-progress contents created more than `deadline` ago: past the fetch deadline, whether a
/// workflow is alive or not. Oldest first, at most `limit`.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all)]
pub async fn in_progress_contents_past_deadline(
    db: impl PgExecutor<'_>,
    deadline: Duration,
    limit: i64,
) -> Result<Vec<ReportContent>, sqlx::Error> {
    sqlx::query_as::<_, ReportContent>(select_contents!(
        "WHERE status = 'in_progress' AND created_at < now() - make_interval(secs => $1)
         ORDER BY created_at LIMIT $2"
    ))
    .bind(deadline.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await
}
