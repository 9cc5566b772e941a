//! `reportUpdated`: a report, live, over the graphql-ws protocol (see [`crate::live`]).

use std::sync::Arc;

use async_graphql::futures_util::stream::{self, Stream};
use async_graphql::{Context, ID, Subscription};
use chrono::{DateTime, Utc};
use liquidity_core::reports::{self, ReportStatus};
use liquidity_core::{ReportContentId, ReportId};
use sqlx::PgPool;

use super::reports::{REPORT_NOT_FOUND, Report, caller_report, load_report};
use crate::auth::Claims;
use crate::error::ApiError;
use crate::live::{ConnectionSubscriptions, LiveReports, ReportWatch, Slot};

#[derive(Default)]
pub struct ReportsSubscription;

#[Subscription]
impl ReportsSubscription {
    /// One of the caller's reports: first as it is now, then again after every change of its
    /// status or of a content's status or data, until it is final (`completed` or `failed`,
    /// with `finishedAt`); then the subscription completes. Another user's report, another
    /// tenant's and a missing one give `NOT_FOUND`. Each connection and each user hold a
    /// bounded number of these (`TOO_MANY_SUBSCRIPTIONS`).
    async fn report_updated(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<impl Stream<Item = Report>> {
        let (claims, pool, report_id) = caller_report(ctx, &id).await?;
        // The token was verified when the connection was opened; a socket may outlive it.
        if claims.exp < Utc::now().timestamp() {
            return Err(ApiError::Unauthenticated("the token has expired: reconnect with a new one").into());
        }
        let live = ctx
            .data::<Arc<LiveReports>>()
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("LiveReports missing from the schema")))?;
        let connection = ctx
            .data::<Arc<ConnectionSubscriptions>>()
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("ConnectionSubscriptions missing from the connection")))?;
        let slot = live
            .admit(claims.user_id, connection)
            .map_err(ApiError::TooManySubscriptions)?;
        // Watch before the first read: a change committed after the read wakes the watch.
        let watch = live
            .watch(claims.tenant_id, report_id)
            .await
            .map_err(|e| ApiError::internal(e, "cannot watch report updates"))?;
        let first = load_report(pool, claims, report_id).await?.ok_or(REPORT_NOT_FOUND)?;
        let updates = Updates {
            pool: pool.clone(),
            claims: claims.clone(),
            report_id,
            watch,
            next: Some(first),
            sent: None,
            _slot: slot,
        };
        Ok(stream::unfold(Some(updates), |updates| async move {
            let mut updates = updates?;
            let stored = updates.next_change().await?;
            let done = stored.0.finished_at.is_some();
            Some((Report::from(stored), (!done).then_some(updates)))
        }))
    }
}

/// What a report looked like, as far as a subscriber is told: a re-read that finds the same
/// revision (a duplicate notification, a re-read after a listener reconnected, a poll's
/// `last_run_at`) sends nothing.
#[derive(PartialEq, Eq)]
struct Revision {
    finished_at: Option<DateTime<Utc>>,
    contents: Vec<(ReportContentId, ReportStatus, Option<String>)>,
}

impl Revision {
    fn of(report: &reports::Report, contents: &[reports::ReportContent]) -> Self {
        Self {
            finished_at: report.finished_at,
            contents: contents.iter().map(|c| (c.id, c.status, c.data.clone())).collect(),
        }
    }
}

type Stored = (reports::Report, Vec<reports::ReportContent>);

/// The state of one subscription's stream.
struct Updates {
    pool: PgPool,
    claims: Claims,
    report_id: ReportId,
    watch: ReportWatch,
    /// A read not yet compared with what was sent.
    next: Option<Stored>,
    sent: Option<Revision>,
    /// Counted against the connection's and the user's bounds until the stream is dropped.
    _slot: Slot,
}

impl Updates {
    /// The next revision that differs from the last one sent; `None` when the report is gone.
    async fn next_change(&mut self) -> Option<Stored> {
        loop {
            if let Some((report, contents)) = self.next.take() {
                let revision = Revision::of(&report, &contents);
                if self.sent.as_ref() != Some(&revision) {
                    self.sent = Some(revision);
                    return Some((report, contents));
                }
            }
            self.watch.changed().await;
            match load_report(&self.pool, &self.claims, self.report_id).await {
                Ok(Some(stored)) => self.next = Some(stored),
                Ok(None) => return None,
                // The database is unreachable (a restart): the tenant's listener reconnects
                // and then wakes every watch, and the next read sends what was missed.
                Err(e) => {
                    tracing::warn!(report_id = %self.report_id, error = ?e, "cannot re-read a watched report; waiting for the next change");
                }
            }
        }
    }
}
