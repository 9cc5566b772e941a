//! The protocol of the external source servers (and of our simulator of them).
//!
//! - `POST /jobs` with a [`JobRequest`] starts (or, for a content id it already knows, returns)
//!   a job: `200` with a [`JobStatus`].
//! - `GET /jobs/{id}` answers the job's [`JobStatus`]; `data` is present once completed.
//!   `404` means the source does not know the job (anymore).
//!
//! `POST /jobs` is idempotent on `contentId`, so a fetch retried after a crash never starts a
//! second job at the source.

use serde::{Deserialize, Serialize};

use crate::ids::{ReportContentId, ReportId, TenantId};

/// Body of `POST /jobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    /// The tenant asking.
    pub tenant_id: TenantId,
    /// The report the content belongs to.
    pub report_id: ReportId,
    /// The content; the idempotency key of the request.
    pub content_id: ReportContentId,
}

/// Where a job stands at the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Still working; ask again later.
    InProgress,
    /// Done; `data` holds the document.
    Completed,
}

/// Answer of both endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The source's job id.
    pub id: String,
    /// Where it stands.
    pub status: JobState,
    /// The document, once completed (a JSON document, stored as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}
