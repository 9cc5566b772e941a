//! What the CDC worker counts, for `/metrics`.
//!
//! - `lqdty_cdc_events_total{tenant, op, outcome}`: every message settled, by how: `handled`
//!   (acked after its effect), `ignored` (acked, nothing to do: a poll's update, a delete),
//!   `dead_lettered` (poison, republished to the dead-letter topic and acked) or `redelivered`
//!   (given back to Pub/Sub: parking lot full, shutdown, dead-letter topic unreachable).
//! - `lqdty_cdc_commit_to_handled_lag_seconds{tenant}`: from the change's commit in the tenant
//!   database (Debezium's `source.ts_ms`) to its handling here: Debezium, Pub/Sub and this
//!   worker together.
//! - `lqdty_cdc_transient_failures_total{tenant}`: handling attempts that failed on an
//!   unavailable tenant database or Temporal (the tenant then backs off).
//! - `lqdty_cdc_reconciler_repairs_total{kind}`: work the reconciler did that the CDC path
//!   should have done (`restarted`, `failed_past_deadline`, `finished`). Any increase is an
//!   alarm.
//! - `lqdty_cdc_reconciler_passes_total` and `lqdty_cdc_reconciler_tenant_failures_total`.
//!
//! `tenant` is a tenant id of the registry, or `unknown` for a message naming none (undecodable,
//! or a `source.name` that is not a registered tenant): a producer cannot mint label values.

use chrono::Utc;
use liquidity_core::tenancy::TenantRegistry;

use crate::envelope::{ChangeEvent, Op};
use crate::reconciler::ReconcileReport;

/// `lqdty_cdc_events_total`.
pub const EVENTS: &str = "lqdty_cdc_events_total";
/// `lqdty_cdc_commit_to_handled_lag_seconds`.
pub const COMMIT_TO_HANDLED_LAG: &str = "lqdty_cdc_commit_to_handled_lag_seconds";
/// `lqdty_cdc_transient_failures_total`.
pub const TRANSIENT_FAILURES: &str = "lqdty_cdc_transient_failures_total";
/// `lqdty_cdc_reconciler_repairs_total`.
pub const RECONCILER_REPAIRS: &str = "lqdty_cdc_reconciler_repairs_total";
/// `lqdty_cdc_reconciler_passes_total`.
pub const RECONCILER_PASSES: &str = "lqdty_cdc_reconciler_passes_total";
/// `lqdty_cdc_reconciler_tenant_failures_total`.
pub const RECONCILER_TENANT_FAILURES: &str = "lqdty_cdc_reconciler_tenant_failures_total";

/// The `tenant` label of a message whose tenant is not in the registry.
const UNKNOWN: &str = "unknown";

/// How a message was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Acked after its effect.
    Handled,
    /// Acked, nothing to do.
    Ignored,
    /// Republished to the dead-letter topic and acked.
    DeadLettered,
    /// Nacked: Pub/Sub delivers it again.
    Redelivered,
}

impl Settled {
    fn label(self) -> &'static str {
        match self {
            Self::Handled => "handled",
            Self::Ignored => "ignored",
            Self::DeadLettered => "dead_lettered",
            Self::Redelivered => "redelivered",
        }
    }
}

/// The labels of one message, taken once when it is decoded.
pub struct EventLabels {
    tenant: String,
    op: &'static str,
}

impl EventLabels {
    /// The labels of a decoded event, bounded by the registry.
    pub fn of(registry: &TenantRegistry, event: &ChangeEvent) -> Self {
        let tenant = if registry.contains(event.tenant_id) {
            event.tenant_id.to_string()
        } else {
            UNKNOWN.to_owned()
        };
        let op = match event.op {
            Op::Create => "create",
            Op::Read => "read",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        };
        Self { tenant, op }
    }

    /// The labels of a message that did not decode.
    pub fn undecodable() -> Self {
        Self {
            tenant: UNKNOWN.to_owned(),
            op: UNKNOWN,
        }
    }

    /// Counts the message as settled so.
    pub fn settled(&self, how: Settled) {
        metrics::counter!(EVENTS, "tenant" => self.tenant.clone(), "op" => self.op, "outcome" => how.label())
            .increment(1);
    }

    /// Counts a transient failure of the message's tenant.
    pub fn transient_failure(&self) {
        metrics::counter!(TRANSIENT_FAILURES, "tenant" => self.tenant.clone()).increment(1);
    }
}

/// Records the commit → handled lag of a handled event (events from producers without
/// `source.ts_ms` have none). A commit "in the future" (clock skew) counts as zero.
pub fn handled_lag(labels: &EventLabels, event: &ChangeEvent) {
    if let Some(committed_at) = event.committed_at {
        let lag = (Utc::now() - committed_at).to_std().unwrap_or_default();
        metrics::histogram!(COMMIT_TO_HANDLED_LAG, "tenant" => labels.tenant.clone()).record(lag);
    }
}

/// Counts one reconciliation pass and its repairs by kind.
pub fn reconciled(report: &ReconcileReport) {
    metrics::counter!(RECONCILER_PASSES).increment(1);
    for (kind, count) in [
        ("restarted", report.restarted),
        ("failed_past_deadline", report.failed_past_deadline),
        ("finished", report.finished),
    ] {
        metrics::counter!(RECONCILER_REPAIRS, "kind" => kind).increment(count as u64);
    }
    metrics::counter!(RECONCILER_TENANT_FAILURES).increment(report.failed_tenants as u64);
}
