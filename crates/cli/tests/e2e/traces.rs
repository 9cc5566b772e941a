//! Traces: every role exports to an OTLP/gRPC receiver in this test, and one report's spans
//! form one trace across the three processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liquidity_test_support::wait_until;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use crate::world::{Options, World};

/// A span as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    /// `service.name` of the exporting process.
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    /// Empty for a root span.
    parent_span_id: Vec<u8>,
    /// String attributes (`report_id`, `content_id`, ...).
    attributes: HashMap<String, String>,
}

/// An OTLP/gRPC trace receiver on a free port, as a collector or Jaeger would be.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

fn strings(attributes: Vec<KeyValue>) -> HashMap<String, String> {
    attributes
        .into_iter()
        .filter_map(|kv| match kv.value?.value? {
            Value::StringValue(value) => Some((kv.key, value)),
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = strings(resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: strings(span.attributes),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves on a free port; returns the endpoint to give the roles.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let incoming = futures::stream::unfold(listener, |listener| async move {
            Some((listener.accept().await.map(|(stream, _)| stream), listener))
        });
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .serve_with_incoming(incoming);
        tokio::spawn(server);
        endpoint
    }

    fn spans(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

/// The spans named `name` exported by `service` whose parent is one of `parents`.
fn children<'a>(spans: &'a [Received], service: &str, name: &str, parents: &[&Received]) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .filter(|s| parents.iter().any(|p| p.span_id == s.parent_span_id))
        .collect()
}

/// The distinct `content_id` attributes of `spans`, sorted.
fn content_ids<'a>(spans: impl IntoIterator<Item = &'a Received>) -> Vec<String> {
    let mut ids: Vec<String> = spans
        .into_iter()
        .filter_map(|s| s.attributes.get("content_id").cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test]
async fn one_reports_trace_links_the_api_request_the_cdc_handling_and_the_workflow_activities() {
    // Arrange: every role exports to the receiver, in batches every 100 ms
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let otel = || {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
    };
    let world = World::start(Options {
        api_env: otel(),
        cdc_env: otel(),
        workflow_env: otel(),
        ..Options::default()
    })
    .await;
    let token = world.user(0).await;

    // Act
    let id = world.start_report(&token).await;
    let status = world.wait_final(&token, &id, Duration::from_secs(90)).await;

    // Assert: API startReport -> its insert -> CDC handling of each content -> the workflow
    // start -> the pollSource activity of each content, parent by parent, in one trace
    assert_eq!(status, "completed");
    let report = world.report(&token, &id).await;
    let mut contents: Vec<String> = report["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    contents.sort();
    let all_polled = |spans: &[Received]| {
        let polls = spans.iter().filter(|s| s.name == "pollSource");
        let polled = content_ids(polls);
        contents.iter().all(|c| polled.contains(c))
    };
    wait_until(
        Duration::from_secs(30),
        "the pollSource spans of the report's three contents",
        || {
            let spans = receiver.spans();
            async move { all_polled(&spans) }
        },
    )
    .await;
    let spans = receiver.spans();

    let root = spans
        .iter()
        .find(|s| s.name == "startReport" && s.attributes.get("report_id") == Some(&id))
        .expect("the API's startReport span, with the report id");
    assert_eq!(root.service, "liquidity-api");
    let trace: Vec<Received> = spans.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect();

    let insert = children(&trace, "liquidity-api", "create_report", &[root]);
    assert_eq!(insert.len(), 1, "the insert of the report's rows, under startReport");
    let handled = children(&trace, "liquidity-cdc-worker", "handle_change", &insert);
    assert!(
        handled.len() >= contents.len(),
        "the CDC worker's handling of each content's INSERT, under the API's insert: {handled:#?}"
    );
    let starts = children(&trace, "liquidity-cdc-worker", "ensure_started", &handled);
    assert_eq!(
        content_ids(starts.iter().copied()),
        contents,
        "a workflow start per content"
    );
    let activities = children(&trace, "liquidity-workflow-worker", "pollSource", &starts);
    assert_eq!(
        content_ids(activities.iter().copied()),
        contents,
        "each content's activity under the CDC worker's start of its workflow: {activities:#?}"
    );
}
