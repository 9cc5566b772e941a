//! Debezium's change-event envelope, as JSON.
//!
//! The local relay and Debezium Server both publish the event *value*: `{before, after,
//! source, op, ts_ms}` (schemas disabled). A producer with schemas enabled wraps it as
//! `{schema, payload}`; we accept that too.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use liquidity_core::reports::{ReportContent, ReportStatus};
use liquidity_core::trace_context::TraceParent;
use liquidity_core::{ReportContentId, ReportId, TenantId};
use serde::Deserialize;

/// The only table we capture.
pub const REPORT_CONTENTS: &str = "report_contents";

/// What happened to the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// INSERT (`c`).
    Create,
    /// Snapshot read (`r`): emitted for existing rows on first start or after a slot reset.
    Read,
    /// UPDATE (`u`).
    Update,
    /// DELETE (`d`).
    Delete,
    /// TRUNCATE (`t`).
    Truncate,
}

/// A decoded change of `report_contents`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    /// `source.name`, which our Debezium configuration sets to the tenant id.
    pub tenant_id: TenantId,
    /// `source.table`.
    pub table: String,
    /// `op`.
    pub op: Op,
    /// The row before an UPDATE or DELETE (full, thanks to `REPLICA IDENTITY FULL`).
    pub before: Option<ReportContent>,
    /// The row after an INSERT, read or UPDATE.
    pub after: Option<ReportContent>,
    /// The `traceparent` the API stored with the row (`after`'s `trace_parent` column): the
    /// span whose trace the handling joins. `None` with traces off and for older rows.
    pub trace_parent: Option<TraceParent>,
    /// When the change was committed in the tenant database (`source.ts_ms`); `None` when the
    /// producer does not say. What the commit → handled lag is measured from.
    pub committed_at: Option<DateTime<Utc>>,
    /// When Debezium turned the change into this event (the envelope's own `ts_ms`); `None`
    /// when the producer does not say. Splits that lag into capture and relay.
    pub captured_at: Option<DateTime<Utc>>,
}

/// Why a message is not a change event we understand. Such a message can never succeed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The data is not a JSON Debezium envelope.
    #[error("not a Debezium JSON envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    /// `source.name` is not a UUID: not one of our tenants' connectors.
    #[error("source.name {0:?} is not a tenant id")]
    TenantNotUuid(String),
    /// The producer's `tenant` attribute contradicts `source.name`.
    #[error("attribute tenant {attribute:?} contradicts source.name {source_name:?}")]
    TenantMismatch {
        /// The attribute.
        attribute: String,
        /// The envelope's `source.name`.
        source_name: String,
    },
    /// An `op` Debezium does not define.
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    /// A `before`/`after` row that is not a `report_contents` row.
    #[error("row is not a report_contents row: {0}")]
    Row(#[source] serde_json::Error),
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(default)]
    before: Option<serde_json::Value>,
    #[serde(default)]
    after: Option<serde_json::Value>,
    source: RawSource,
    op: String,
    /// When the connector processed the change, in ms since the epoch.
    #[serde(default)]
    ts_ms: Option<i64>,
}

#[derive(Deserialize)]
struct RawSource {
    name: String,
    table: String,
    /// Commit time of the change in the source database, in ms since the epoch.
    #[serde(default)]
    ts_ms: Option<i64>,
}

#[derive(Deserialize)]
struct RawRow {
    id: ReportContentId,
    report_id: ReportId,
    source: String,
    status: ReportStatus,
    data: Option<String>,
    created_at: DateTime<Utc>,
    /// Left out by Debezium (`column.exclude.list`), so that a poll, which only moves it, is no
    /// event; older producers still send it.
    #[serde(default)]
    last_run_at: Option<DateTime<Utc>>,
    // Absent from events of rows written before the column existed.
    #[serde(default)]
    trace_parent: Option<TraceParent>,
}

impl From<RawRow> for ReportContent {
    fn from(row: RawRow) -> Self {
        Self {
            id: row.id,
            report_id: row.report_id,
            source: row.source,
            status: row.status,
            data: row.data,
            created_at: row.created_at,
            // An INSERT sets both to now(); no decision of the CDC worker reads it.
            last_run_at: row.last_run_at.unwrap_or(row.created_at),
        }
    }
}

/// Decodes a Pub/Sub message's data (and checks its optional `tenant` attribute).
///
/// Rows are only decoded for `report_contents`; an event of another table decodes with
/// `before`/`after` left empty, for the handler to refuse by table name.
///
/// # Errors
/// [`DecodeError`] for anything that is not a well-formed event of one of our tenants.
pub fn decode(data: &[u8], attributes: &HashMap<String, String>) -> Result<ChangeEvent, DecodeError> {
    let mut value: serde_json::Value = serde_json::from_slice(data).map_err(DecodeError::Envelope)?;
    if value.get("schema").is_some()
        && let Some(payload) = value.get_mut("payload")
    {
        value = payload.take();
    }
    let raw: RawEnvelope = serde_json::from_value(value).map_err(DecodeError::Envelope)?;
    if let Some(attribute) = attributes.get("tenant").filter(|t| **t != raw.source.name) {
        return Err(DecodeError::TenantMismatch {
            attribute: attribute.clone(),
            source_name: raw.source.name,
        });
    }
    let tenant_id = raw
        .source
        .name
        .parse()
        .map_err(|_| DecodeError::TenantNotUuid(raw.source.name.clone()))?;
    let op = match raw.op.as_str() {
        "c" => Op::Create,
        "r" => Op::Read,
        "u" => Op::Update,
        "d" => Op::Delete,
        "t" => Op::Truncate,
        other => return Err(DecodeError::UnknownOp(other.to_owned())),
    };
    let is_contents = raw.source.table == REPORT_CONTENTS;
    let row = |value: Option<serde_json::Value>| -> Result<Option<RawRow>, DecodeError> {
        match value.filter(|v| is_contents && !v.is_null()) {
            None => Ok(None),
            Some(v) => serde_json::from_value::<RawRow>(v).map(Some).map_err(DecodeError::Row),
        }
    };
    let before = row(raw.before)?;
    let mut after = row(raw.after)?;
    Ok(ChangeEvent {
        tenant_id,
        table: raw.source.table.clone(),
        op,
        trace_parent: after.as_mut().and_then(|r| r.trace_parent.take()),
        committed_at: raw.source.ts_ms.and_then(DateTime::from_timestamp_millis),
        captured_at: raw.ts_ms.and_then(DateTime::from_timestamp_millis),
        before: before.map(Into::into),
        after: after.map(Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "00000000-0000-4000-8000-000000000001";

    fn row(status: &str) -> serde_json::Value {
        serde_json::json!({
            "id": "6a1f7c3e-5d0b-4a63-9d43-3c8a4a5f1b01",
            "report_id": "0b9e2f4c-8a1d-4e5f-9c7b-2d3e4f5a6b7c",
            "source": "source_2",
            "status": status,
            "data": null,
            "created_at": "2026-11-22T02:30:00.123456Z",
            "last_run_at": "2026-11-22T02:30:00.123456Z"
        })
    }

    fn envelope(op: &str, before: serde_json::Value, after: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "before": before, "after": after, "op": op, "ts_ms": 1,
            "source": { "version": "3.6.3.Final", "connector": "postgresql", "name": TENANT, "db": "lqdty_t1",
                        "schema": "public", "table": "report_contents", "lsn": 123 }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_insert_decodes_to_the_whole_content_entity() {
        // Act
        let event = decode(
            &envelope("c", serde_json::Value::Null, row("in_progress")),
            &HashMap::new(),
        )
        .unwrap();

        // Assert
        assert_eq!(event.tenant_id.to_string(), TENANT);
        assert_eq!(event.op, Op::Create);
        assert!(event.before.is_none());
        let after = event.after.unwrap();
        assert_eq!(
            (after.source.as_str(), after.status),
            ("source_2", ReportStatus::InProgress)
        );
        assert_eq!(after.created_at.to_rfc3339(), "2026-11-22T02:30:00.123456+00:00");
        assert_eq!(event.trace_parent, None, "a row without the column has no trace parent");
    }

    #[test]
    fn the_trace_parent_stored_with_the_row_comes_with_the_event() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut after = row("in_progress");
        after["trace_parent"] = traceparent.into();
        let event = decode(&envelope("c", serde_json::Value::Null, after), &HashMap::new()).unwrap();
        assert_eq!(event.trace_parent.as_ref().map(TraceParent::as_str), Some(traceparent));
    }

    #[test]
    fn an_update_carries_both_rows() {
        let event = decode(&envelope("u", row("in_progress"), row("completed")), &HashMap::new()).unwrap();
        assert_eq!(event.before.unwrap().status, ReportStatus::InProgress);
        assert_eq!(event.after.unwrap().status, ReportStatus::Completed);
    }

    #[test]
    fn a_row_without_last_run_at_decodes_with_its_creation_time() {
        // Arrange: what Debezium sends with last_run_at in column.exclude.list
        let mut after = row("in_progress");
        after.as_object_mut().unwrap().remove("last_run_at");

        // Act
        let event = decode(&envelope("c", serde_json::Value::Null, after), &HashMap::new()).unwrap();

        // Assert
        let content = event.after.unwrap();
        assert_eq!(content.last_run_at, content.created_at);
    }

    #[test]
    fn the_commit_time_comes_from_source_ts_ms_and_is_optional() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&envelope("c", serde_json::Value::Null, row("in_progress"))).unwrap();
        let without = decode(value.to_string().as_bytes(), &HashMap::new()).unwrap();
        value["source"]["ts_ms"] = 1_795_000_000_123_i64.into();
        let with = decode(value.to_string().as_bytes(), &HashMap::new()).unwrap();
        assert_eq!(without.committed_at, None);
        assert_eq!(
            with.committed_at.map(|at| at.timestamp_millis()),
            Some(1_795_000_000_123)
        );
    }

    #[test]
    fn the_capture_time_comes_from_the_envelopes_own_ts_ms_and_is_optional() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&envelope("c", serde_json::Value::Null, row("in_progress"))).unwrap();
        value["ts_ms"] = 1_795_000_000_456_i64.into();
        let with = decode(value.to_string().as_bytes(), &HashMap::new()).unwrap();
        value.as_object_mut().unwrap().remove("ts_ms");
        let without = decode(value.to_string().as_bytes(), &HashMap::new()).unwrap();
        assert_eq!(
            with.captured_at.map(|at| at.timestamp_millis()),
            Some(1_795_000_000_456)
        );
        assert_eq!(without.captured_at, None);
    }

    #[test]
    fn a_schema_wrapped_envelope_is_accepted() {
        let inner: serde_json::Value =
            serde_json::from_slice(&envelope("r", serde_json::Value::Null, row("failed"))).unwrap();
        let wrapped = serde_json::json!({ "schema": {}, "payload": inner }).to_string();
        assert_eq!(decode(wrapped.as_bytes(), &HashMap::new()).unwrap().op, Op::Read);
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let no_json = decode(b"not json", &HashMap::new());
        let mut bad_row = row("in_progress");
        bad_row["status"] = "exploded".into();
        let bad_status = decode(&envelope("c", serde_json::Value::Null, bad_row), &HashMap::new());
        let bad_op = decode(
            &envelope("x", serde_json::Value::Null, row("in_progress")),
            &HashMap::new(),
        );
        assert!(matches!(no_json, Err(DecodeError::Envelope(_))));
        assert!(matches!(bad_status, Err(DecodeError::Row(_))));
        assert!(matches!(bad_op, Err(DecodeError::UnknownOp(op)) if op == "x"));
    }

    #[test]
    fn a_source_name_that_is_not_a_tenant_id_is_refused() {
        let data = String::from_utf8(envelope("c", serde_json::Value::Null, row("in_progress"))).unwrap();
        let data = data.replace(TENANT, "lqdty_t1");
        assert!(matches!(
            decode(data.as_bytes(), &HashMap::new()),
            Err(DecodeError::TenantNotUuid(_))
        ));
    }

    #[test]
    fn a_tenant_attribute_contradicting_source_name_is_refused() {
        let attributes = HashMap::from([("tenant".to_owned(), "00000000-0000-4000-8000-000000000002".to_owned())]);
        let result = decode(&envelope("c", serde_json::Value::Null, row("in_progress")), &attributes);
        assert!(matches!(result, Err(DecodeError::TenantMismatch { .. })));
    }

    #[test]
    fn another_tables_rows_are_not_decoded() {
        let data = String::from_utf8(envelope("c", serde_json::Value::Null, serde_json::json!({"id": 1}))).unwrap();
        let data = data.replace("\"report_contents\"", "\"report\"");
        let event = decode(data.as_bytes(), &HashMap::new()).unwrap();
        assert_eq!((event.table.as_str(), event.after), ("report", None));
    }
}
