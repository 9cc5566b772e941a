//! Logging: an `EnvFilter` from `LOG_LEVEL`, human text or JSON lines from `LOG_FORMAT`.
//! Traces: OpenTelemetry over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, one
//! `service.name` per role; without it no exporter exists and no span leaves the process.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::args::{LogArgs, LogFormat};

/// What is exported as spans: our own crates (`liquidity`, `liquidity_api`, ...) at `info`,
/// whatever `LOG_LEVEL` says. The SDKs underneath (Temporal's core, Pub/Sub's gRPC, sqlx) have
/// spans of their own for every poll and stream; they would bury a report's few spans.
const TRACED_TARGET: &str = "liquidity";

/// The trace pipeline of a process, kept to flush it at exit.
#[must_use = "dropping it without `shutdown` loses the spans not exported yet"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still batched (the exporter sends every few seconds) and stops the
    /// exporter. Failures are reported on stderr: the process is ending anyway.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            eprintln!("traces: flushing the last spans failed: {e}");
        }
    }
}

/// Installs the global subscriber. Logs go to stderr; stdout stays free for command output
/// (`liquidity schema`, `liquidity tenants`). `role` names the process in traces
/// (`service.name` = `liquidity-<role>`).
///
/// Must run inside the Tokio runtime: the gRPC exporter's connection lives on it.
///
/// # Errors
/// An `OTEL_EXPORTER_OTLP_ENDPOINT` that is not a usable endpoint.
pub fn init(args: &LogArgs, role: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!(
            "LOG_LEVEL {:?} is not a valid filter ({e}); using \"info\"",
            args.log_level
        );
        EnvFilter::new("info")
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match args.log_format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(logs.with_filter(filter));
    // Empty counts as unset, as the OpenTelemetry spec says of its variables.
    let Some(endpoint) = args.otel_exporter_otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
        // No layer at all rather than an empty one: the subscriber stays what it was before
        // traces existed, with callsites disabled by LOG_LEVEL costing nothing.
        subscriber.init();
        return Ok(Telemetry { traces: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?} is not a usable OTLP/gRPC endpoint"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(format!("liquidity-{role}"))
                .build(),
        )
        .build();
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("liquidity"))
        .with_filter(Targets::new().with_target(TRACED_TARGET, LevelFilter::INFO));
    subscriber.with(traces).init();
    Ok(Telemetry { traces: Some(provider) })
}
