//! The trace context that links one report's work across processes.
//!
//! A report is handled by three processes that never call each other: the API writes rows,
//! Debezium turns them into events, the CDC worker starts a Temporal workflow, the workflow
//! worker runs its activity. So the context travels with the data: the API stores the W3C
//! `traceparent` of its span in `report_contents.trace_parent`, the CDC worker reads it from the
//! event and makes its span a child of it, and puts its own `traceparent` in the workflow input,
//! from which the activity's span is made a child of the CDC worker's span.
//!
//! With traces off (no OpenTelemetry layer installed) [`TraceParent::current`] is `None` and
//! [`follow`] does nothing: no string is formatted and nothing is parsed.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header name of W3C Trace Context, the only key a carrier holds.
const TRACEPARENT: &str = "traceparent";

/// A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`): which span caused the work that
/// carries it. Stored and sent as that string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct TraceParent(String);

impl TraceParent {
    /// The `traceparent` of the current span, or `None` when traces are off (or the span is
    /// not recorded by OpenTelemetry).
    pub fn current() -> Option<Self> {
        let context = tracing::Span::current().context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut written = Written(None);
        TraceContextPropagator::new().inject_context(&context, &mut written);
        written.0.map(Self)
    }

    /// The string as stored and sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Makes `span` a child of the span that `parent` names, in that span's trace. Call it before
/// the span is first entered: OpenTelemetry starts the span then, and its parent is fixed from
/// that moment. Without a parent (rows written before traces were on, work of the reconciler)
/// or with traces off, `span` stays where it is.
pub fn follow(span: &tracing::Span, parent: Option<&TraceParent>) {
    let Some(parent) = parent else { return };
    let context = TraceContextPropagator::new().extract(&Stored(&parent.0));
    // An unparsable value yields an empty context, which leaves the span a root: a trace link is
    // worth nothing to the work itself, so it never fails it. Errors only say that traces are
    // off or that the span was already started.
    let _ = span.set_parent(context);
}

/// Where the propagator writes a span's `traceparent`.
struct Written(Option<String>);

impl Injector for Written {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// A stored `traceparent`, as the propagator reads it.
struct Stored<'a>(&'a str);

impl Extractor for Stored<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Keeps every ended span, so that a test can read its parent.
    #[derive(Clone, Debug, Default)]
    struct Ended(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Ended {
        fn on_start(&self, _: &mut Span, _: &opentelemetry::Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    impl Ended {
        fn named(&self, name: &str) -> SpanData {
            let spans = self.0.lock().unwrap();
            spans.iter().find(|s| s.name == name).cloned().expect(name)
        }
    }

    fn with_traces(f: impl FnOnce()) -> Ended {
        let ended = Ended::default();
        let provider = SdkTracerProvider::builder().with_span_processor(ended.clone()).build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
        ended
    }

    #[test]
    fn a_span_that_follows_a_traceparent_is_a_child_of_that_span_in_its_trace() {
        // Arrange: the writer's traceparent, as the API stores it
        let mut stored = None;
        let ended = with_traces(|| {
            tracing::info_span!("writer").in_scope(|| stored = TraceParent::current());
            // Act: another process's span follows it
            let reader = tracing::info_span!("reader");
            follow(&reader, stored.as_ref());
            reader.in_scope(|| {});
        });

        // Assert
        let (writer, reader) = (ended.named("writer"), ended.named("reader"));
        assert_eq!(reader.parent_span_id, writer.span_context.span_id());
        assert_eq!(reader.span_context.trace_id(), writer.span_context.trace_id());
        let stored = stored.unwrap();
        assert_eq!(
            stored.as_str(),
            format!(
                "00-{}-{}-01",
                writer.span_context.trace_id(),
                writer.span_context.span_id()
            )
        );
    }

    #[test]
    fn an_unparsable_traceparent_leaves_the_span_a_root() {
        let ended = with_traces(|| {
            let span = tracing::info_span!("reader");
            follow(&span, Some(&TraceParent("00-garbage".to_owned())));
            span.in_scope(|| {});
        });
        assert_eq!(
            ended.named("reader").parent_span_id,
            opentelemetry::trace::SpanId::INVALID
        );
    }

    #[test]
    fn with_traces_off_there_is_no_traceparent_and_following_one_does_nothing() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work");
            follow(
                &span,
                Some(&TraceParent(
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
                )),
            );
            assert_eq!(span.in_scope(TraceParent::current), None);
        });
    }
}
