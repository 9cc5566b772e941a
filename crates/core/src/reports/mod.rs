//! Reports and their per-source contents, stored in each tenant's own database.

mod repo;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use repo::{
    complete_content, create_report, fail_content, find_content, find_report, finish_report_if_done,
    in_progress_contents_past_deadline, list_contents, report_progress, stale_in_progress_contents,
    stale_in_progress_contents_page, touch_content, unfinished_done_reports,
};

use crate::ids::{ReportContentId, ReportId, TenantId, UserId};

/// The sources every report is built from, one `report_contents` row each (the spec's static
/// array). The workflow worker's `SOURCES_CONFIG` must give a URL for each of them.
pub const REPORT_SOURCES: [&str; 3] = ["source_1", "source_2", "source_3"];

/// The `LISTEN`/`NOTIFY` channel on which a tenant database announces a visible change of a
/// report (a content's status or data, the report's `finished_at`), with the report id as the
/// only payload. Sent by the triggers of the tenant migration `report_updated_notify`; the API
/// listens to it to feed `reportUpdated` subscriptions.
pub const REPORT_UPDATED_CHANNEL: &str = "report_updated";

/// Status of a report content, and of a report as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "report_content_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Still being fetched.
    InProgress,
    /// Fetched; `data` holds the source's document.
    Completed,
    /// Given up on; `data` holds the reason.
    Failed,
}

impl ReportStatus {
    /// Completed and failed are final: nothing moves a content out of them.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::InProgress)
    }

    /// The status of a report from those of its contents: completed when all completed, failed
    /// when all are final and at least one failed, otherwise in progress.
    pub fn of_contents(contents: impl IntoIterator<Item = Self>) -> Self {
        let mut any_failed = false;
        let mut any = false;
        for status in contents {
            any = true;
            match status {
                Self::InProgress => return Self::InProgress,
                Self::Failed => any_failed = true,
                Self::Completed => {}
            }
        }
        match (any, any_failed) {
            (false, _) => Self::InProgress,
            (true, true) => Self::Failed,
            (true, false) => Self::Completed,
        }
    }

    /// What a client sees: final only once the CDC worker has set `finished_at`, so a
    /// `completed` answer always comes with a `finishedAt`.
    pub fn of_report(finished_at: Option<DateTime<Utc>>, contents: impl IntoIterator<Item = Self>) -> Self {
        match finished_at {
            None => Self::InProgress,
            Some(_) => Self::of_contents(contents),
        }
    }
}

/// A row of `report`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Report {
    /// The report id returned by `startReport`.
    pub id: ReportId,
    /// From the JWT of the user who started it.
    pub tenant_id: TenantId,
    /// From the JWT of the user who started it; only that user may read it.
    pub user_id: UserId,
    /// When `startReport` ran.
    pub started_at: DateTime<Utc>,
    /// When the last content reached a final status; set exactly once.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A row of `report_contents`: the whole entity, as the workflow receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ReportContent {
    /// The content id; with the tenant id, it names the workflow that fetches it.
    pub id: ReportContentId,
    /// The report it belongs to.
    pub report_id: ReportId,
    /// One of [`REPORT_SOURCES`].
    pub source: String,
    /// Where the fetch stands.
    pub status: ReportStatus,
    /// The document once completed, the failure reason once failed.
    pub data: Option<String>,
    /// Insert time.
    pub created_at: DateTime<Utc>,
    /// Last successful check with the source.
    pub last_run_at: DateTime<Utc>,
}

/// A report's finish time and the statuses of its contents: enough to answer `reportStatus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportProgress {
    /// `report.finished_at`.
    pub finished_at: Option<DateTime<Utc>>,
    /// One status per content.
    pub contents: Vec<ReportStatus>,
}

impl ReportProgress {
    /// The report's status as clients see it.
    pub fn status(&self) -> ReportStatus {
        ReportStatus::of_report(self.finished_at, self.contents.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::ReportStatus::{Completed, Failed, InProgress};
    use super::*;

    #[test]
    fn a_report_is_completed_only_when_every_content_completed() {
        assert_eq!(ReportStatus::of_contents([Completed, Completed, Completed]), Completed);
        assert_eq!(
            ReportStatus::of_contents([Completed, InProgress, Completed]),
            InProgress
        );
    }

    #[test]
    fn a_report_fails_once_every_content_is_final_and_one_failed() {
        assert_eq!(ReportStatus::of_contents([Completed, Failed, Completed]), Failed);
        assert_eq!(ReportStatus::of_contents([InProgress, Failed, Completed]), InProgress);
    }

    #[test]
    fn a_report_without_contents_is_in_progress() {
        assert_eq!(ReportStatus::of_contents([]), InProgress);
    }

    #[test]
    fn a_report_is_in_progress_until_finished_at_is_set() {
        let now = Utc::now();
        assert_eq!(ReportStatus::of_report(None, [Completed, Completed]), InProgress);
        assert_eq!(ReportStatus::of_report(Some(now), [Completed, Completed]), Completed);
        assert_eq!(ReportStatus::of_report(Some(now), [Failed, Completed]), Failed);
    }

    #[test]
    fn only_in_progress_is_not_terminal() {
        assert!(!InProgress.is_terminal());
        assert!(Completed.is_terminal());
        assert!(Failed.is_terminal());
    }

    #[test]
    fn statuses_serialize_as_the_spec_writes_them() {
        assert_eq!(serde_json::to_string(&InProgress).unwrap(), r#""in_progress""#);
        assert_eq!(
            serde_json::from_str::<ReportStatus>(r#""completed""#).unwrap(),
            Completed
        );
    }
}
