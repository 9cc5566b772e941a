//! `startReport`, `reportStatus`, `report`.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use liquidity_core::ReportId;
use liquidity_core::reports::{self, REPORT_SOURCES};

use sqlx::PgPool;

use super::{claims, deps};
use crate::auth::Claims;
use crate::error::ApiError;

/// Where a report, or one of its contents, stands.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "snake_case")]
pub enum ReportStatus {
    /// Sources are still being fetched.
    InProgress,
    /// Every source delivered.
    Completed,
    /// Every source is done and at least one could not deliver.
    Failed,
}

impl From<reports::ReportStatus> for ReportStatus {
    fn from(status: reports::ReportStatus) -> Self {
        match status {
            reports::ReportStatus::InProgress => Self::InProgress,
            reports::ReportStatus::Completed => Self::Completed,
            reports::ReportStatus::Failed => Self::Failed,
        }
    }
}

/// The id of a report that was just started.
#[derive(SimpleObject)]
pub struct StartReportPayload {
    report_id: ID,
}

/// The status of a report.
#[derive(SimpleObject)]
pub struct ReportStatusPayload {
    status: ReportStatus,
}

/// A report with the content of every source.
#[derive(SimpleObject)]
pub struct Report {
    id: ID,
    tenant_id: ID,
    user_id: ID,
    /// `completed` or `failed` only once `finishedAt` is set.
    status: ReportStatus,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    contents: Vec<ReportContent>,
}

/// What one source delivered.
#[derive(SimpleObject)]
pub struct ReportContent {
    id: ID,
    source: String,
    status: ReportStatus,
    /// The source's JSON document once completed; the reason once failed.
    data: Option<String>,
    created_at: DateTime<Utc>,
    last_run_at: DateTime<Utc>,
}

impl From<reports::ReportContent> for ReportContent {
    fn from(content: reports::ReportContent) -> Self {
        Self {
            id: content.id.to_string().into(),
            source: content.source,
            status: content.status.into(),
            data: content.data,
            created_at: content.created_at,
            last_run_at: content.last_run_at,
        }
    }
}

/// The caller's claims, their tenant's pool and the parsed report id: what both report queries
/// start from. The tenant comes from the verified token, never from the arguments.
pub(super) async fn caller_report<'a>(
    ctx: &Context<'a>,
    id: &ID,
) -> Result<(&'a Claims, &'a PgPool, ReportId), ApiError> {
    let claims = claims(ctx)?;
    let report_id = id.parse().map_err(|_| ApiError::bad_field("id", "must be a UUID"))?;
    let pool = deps(ctx)?.registry.pool(claims.tenant_id).await?;
    Ok((claims, pool, report_id))
}

pub(super) const REPORT_NOT_FOUND: ApiError = ApiError::NotFound("report not found");

/// A report and its contents as stored, when it exists in the caller's tenant and the caller
/// started it (what `report` answers and `reportUpdated` sends).
pub(super) async fn load_report(
    pool: &PgPool,
    claims: &Claims,
    report_id: ReportId,
) -> Result<Option<(reports::Report, Vec<reports::ReportContent>)>, ApiError> {
    let Some(report) = reports::find_report(pool, claims.tenant_id, claims.user_id, report_id).await? else {
        return Ok(None);
    };
    let contents = reports::list_contents(pool, report.id).await?;
    Ok(Some((report, contents)))
}

impl From<(reports::Report, Vec<reports::ReportContent>)> for Report {
    fn from((report, contents): (reports::Report, Vec<reports::ReportContent>)) -> Self {
        let status = reports::ReportStatus::of_report(report.finished_at, contents.iter().map(|c| c.status));
        Self {
            id: report.id.to_string().into(),
            tenant_id: report.tenant_id.to_string().into(),
            user_id: report.user_id.to_string().into(),
            status: status.into(),
            started_at: report.started_at,
            finished_at: report.finished_at,
            contents: contents.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Default)]
pub struct ReportsQuery;

#[Object]
impl ReportsQuery {
    /// The status of one of the caller's reports.
    async fn report_status(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ReportStatusPayload> {
        let (claims, pool, report_id) = caller_report(ctx, &id).await?;
        let progress = reports::report_progress(pool, claims.tenant_id, claims.user_id, report_id)
            .await
            .map_err(ApiError::from)?
            .ok_or(REPORT_NOT_FOUND)?;
        Ok(ReportStatusPayload {
            status: progress.status().into(),
        })
    }

    /// One of the caller's reports with every source's content.
    async fn report(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Report> {
        let (claims, pool, report_id) = caller_report(ctx, &id).await?;
        Ok(load_report(pool, claims, report_id)
            .await?
            .ok_or(REPORT_NOT_FOUND)?
            .into())
    }
}

#[derive(Default)]
pub struct ReportsMutation;

#[Object]
impl ReportsMutation {
    /// Starts a report for the caller: one content per source, fetched in the background.
    // The root of the report's trace: its contents carry this span's context to the CDC worker.
    #[tracing::instrument(name = "startReport", skip_all, fields(report_id = tracing::field::Empty))]
    async fn start_report(&self, ctx: &Context<'_>) -> async_graphql::Result<StartReportPayload> {
        let claims = claims(ctx)?;
        let pool = deps(ctx)?
            .registry
            .pool(claims.tenant_id)
            .await
            .map_err(ApiError::from)?;
        let report_id = reports::create_report(pool, claims.tenant_id, claims.user_id, &REPORT_SOURCES)
            .await
            .map_err(ApiError::from)?;
        tracing::Span::current().record("report_id", tracing::field::display(report_id));
        tracing::info!(%report_id, "report started");
        Ok(StartReportPayload {
            report_id: report_id.to_string().into(),
        })
    }
}
