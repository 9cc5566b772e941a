//! What the CDC worker counts, for `/metrics`.
//!
//! - `lqdty_cdc_events_total{tenant, op, outcome}`: every message settled, by how: `handled`
//!   (acked after its effect), `ignored` (acked, nothing to do: a poll's update, a delete),
//!   `dead_lettered` (poison, republished to the dead-letter topic and acked) or `redelivered`
//!   (given back to Pub/Sub: parking lot full, shutdown, dead-letter topic unreachable).
//! - `lqdty_cdc_commit_to_handled_lag_seconds{tenant}`: from the change's commit in the tenant
//!   database (Debezium's `source.ts_ms`) to its handling here: Debezium, Pub/Sub and this
//!   worker together.
//! - `lqdty_cdc_hop_duration_seconds{hop}`: the same way, hop by hop: `capture` (commit → Debezium
//!   wrote the event, its `ts_ms`), `relay` (→ Pub/Sub accepted it, the message's
//!   `publish_time`), `delivery` (→ this worker read it from the stream), `handling` (→ handled
//!   and acked). A hop whose timestamps the producer did not send is not recorded.
//! - `lqdty_cdc_transient_failures_total{tenant}`: handling attempts that failed on an
//!   unavailable tenant database or Temporal (the tenant then backs off).
//! - `lqdty_cdc_reconciler_repairs_total{kind}`: work the reconciler did that the CDC path
//!   should have done (`restarted`, `failed_past_deadline`, `finished`). Any increase is an
//!   alarm.
//! - `lqdty_cdc_reconciler_passes_total` and `lqdty_cdc_reconciler_tenant_failures_total`.
//!
//! `tenant` is a tenant id of the registry, or `unknown` for a message naming none (undecodable,
//! or a `source.name` that is not a registered tenant): a producer cannot mint label values.

use chrono::{DateTime, Utc};
use liquidity_core::tenancy::TenantRegistry;

use crate::envelope::{ChangeEvent, Op};
use crate::reconciler::ReconcileReport;

/// `lqdty_cdc_events_total`.
pub const EVENTS: &str = "lqdty_cdc_events_total";
/// `lqdty_cdc_commit_to_handled_lag_seconds`.
pub const COMMIT_TO_HANDLED_LAG: &str = "lqdty_cdc_commit_to_handled_lag_seconds";
/// `lqdty_cdc_hop_duration_seconds`.
pub const HOP_DURATION: &str = "lqdty_cdc_hop_duration_seconds";
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

/// When a message passed each point between the commit and this worker, as far as known.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    /// Committed in the tenant database (`source.ts_ms`).
    pub committed_at: Option<DateTime<Utc>>,
    /// Written by Debezium (the envelope's `ts_ms`).
    pub captured_at: Option<DateTime<Utc>>,
    /// Accepted by Pub/Sub (`publish_time`).
    pub published_at: Option<DateTime<Utc>>,
    /// Read from the stream by this worker.
    pub received_at: DateTime<Utc>,
}

/// A hop: its name, when the message entered it and when it left it (`None`: not known).
type Hop = (&'static str, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

impl Timeline {
    /// The hops before this worker: name, start, end.
    fn hops(&self) -> [Hop; 3] {
        [
            ("capture", self.committed_at, self.captured_at),
            ("relay", self.captured_at, self.published_at),
            ("delivery", self.published_at, Some(self.received_at)),
        ]
    }

    /// Writes the hops before this worker into `span`'s fields `capture_ms`, `relay_ms` and
    /// `delivery_ms`, so that every log line of the message says where its time went. Signed:
    /// a negative hop is a clock skew between machines, which the log should show, not hide.
    pub fn record_in(&self, span: &tracing::Span) {
        // In the order of `hops`; the consumer's `cdc_message` span declares them.
        const FIELDS: [&str; 3] = ["capture_ms", "relay_ms", "delivery_ms"];
        for (field, (_, from, to)) in FIELDS.into_iter().zip(self.hops()) {
            if let (Some(from), Some(to)) = (from, to) {
                span.record(field, (to - from).num_milliseconds());
            }
        }
    }

    /// Records a handled message: its commit → handled lag and each hop, `handling` included.
    /// A negative hop (clock skew) counts as zero.
    pub fn handled(&self, labels: &EventLabels) {
        let now = Utc::now();
        let elapsed = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).to_std().unwrap_or_default();
        if let Some(committed_at) = self.committed_at {
            metrics::histogram!(COMMIT_TO_HANDLED_LAG, "tenant" => labels.tenant.clone())
                .record(elapsed(committed_at, now));
        }
        let handling = ("handling", Some(self.received_at), Some(now));
        for (hop, from, to) in self.hops().into_iter().chain([handling]) {
            if let (Some(from), Some(to)) = (from, to) {
                metrics::histogram!(HOP_DURATION, "hop" => hop).record(elapsed(from, to));
            }
        }
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
