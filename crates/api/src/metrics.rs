//! Request metrics of the GraphQL API: latency per operation, errors by code.
//!
//! - `lqdty_api_graphql_request_duration_seconds{operation, type}`: a histogram of every
//!   GraphQL request over HTTP, from the parse to the response (guard refusals and validation
//!   errors included).
//! - `lqdty_api_graphql_errors_total{operation, code}`: errors of those responses by
//!   `extensions.code`.
//!
//! `operation` is the **schema's root field** the operation selects (`startReport`, `report`,
//! …), never the client's operation name: clients name operations freely, so a label taken from
//! them would let anyone create series without bound (a cardinality attack on the metrics
//! store). Fields the schema does not have count as `unknown`, several different root fields as
//! `multiple`, `__schema`/`__type`/`__typename` as `introspection`, and an unparsable request
//! as `invalid`: every label value is one of [`OPERATION_LABELS`], and every code one of
//! [`ERROR_CODES`] or `OTHER`.
//!
//! The hot path allocates nothing for metrics: every series' handle is taken once, at the first
//! request (after the binary installed its recorder), and a request only indexes into them.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Name, Response, ServerResult, Value, Variables};
use metrics::{Counter, Histogram};

/// `lqdty_api_graphql_request_duration_seconds`.
pub const REQUEST_DURATION: &str = "lqdty_api_graphql_request_duration_seconds";
/// `lqdty_api_graphql_errors_total`.
pub const ERRORS: &str = "lqdty_api_graphql_errors_total";

/// Root fields of the schema, each its own `operation` label (a test checks that every root
/// field of the schema is here).
pub const ROOT_FIELDS: [&str; 7] = [
    "register",
    "login",
    "startReport",
    "me",
    "reportStatus",
    "report",
    "reportUpdated",
];

const INTROSPECTION: usize = ROOT_FIELDS.len();
const MULTIPLE: usize = INTROSPECTION + 1;
const UNKNOWN: usize = MULTIPLE + 1;
const INVALID: usize = UNKNOWN + 1;

/// Every value the `operation` label can take.
pub const OPERATION_LABELS: [&str; INVALID + 1] = [
    ROOT_FIELDS[0],
    ROOT_FIELDS[1],
    ROOT_FIELDS[2],
    ROOT_FIELDS[3],
    ROOT_FIELDS[4],
    ROOT_FIELDS[5],
    ROOT_FIELDS[6],
    "introspection",
    "multiple",
    "unknown",
    "invalid",
];

/// Every value the `type` label can take; `unknown` when the request did not parse.
const OPERATION_TYPES: [&str; 4] = ["query", "mutation", "subscription", "unknown"];
const UNKNOWN_TYPE: usize = 3;

/// `extensions.code` values of [`crate::error::ApiError`]; any other (or none: the parser's
/// and validator's own errors carry no code) is counted as `OTHER`.
pub const ERROR_CODES: [&str; 10] = [
    "BAD_USER_INPUT",
    "UNAUTHENTICATED",
    "CONFLICT",
    "NOT_FOUND",
    "OPERATION_REFUSED",
    "RATE_LIMITED",
    "UNAVAILABLE",
    "TOO_MANY_SUBSCRIPTIONS",
    "INTERNAL",
    "OTHER",
];
const OTHER_CODE: usize = ERROR_CODES.len() - 1;

/// Fragments spread inside fragments are followed this deep at most: the guard has already
/// refused deeper documents, and validation refuses cycles.
const MAX_FRAGMENT_NESTING: usize = 8;

/// The `operation` label (an index into [`OPERATION_LABELS`]) of a set of root field names.
pub fn operation_label<'a>(root_fields: impl IntoIterator<Item = &'a str>) -> &'static str {
    OPERATION_LABELS[operation_index(root_fields)]
}

fn operation_index<'a>(root_fields: impl IntoIterator<Item = &'a str>) -> usize {
    let mut label = None;
    for field in root_fields {
        let this = match field {
            "__schema" | "__type" | "__typename" => INTROSPECTION,
            _ => ROOT_FIELDS.iter().position(|known| *known == field).unwrap_or(UNKNOWN),
        };
        match label {
            None => label = Some(this),
            Some(previous) if previous != this => return MULTIPLE,
            Some(_) => {}
        }
    }
    label.unwrap_or(UNKNOWN)
}

/// The root field names an operation selects (aliases resolved to their field, fragments
/// followed), passed to `visit`.
fn visit_root_fields<'a>(
    document: &'a ExecutableDocument,
    selection_set: &'a SelectionSet,
    nesting: usize,
    visit: &mut impl FnMut(&'a str),
) {
    for selection in &selection_set.items {
        match &selection.node {
            Selection::Field(field) => visit(field.node.name.node.as_str()),
            Selection::InlineFragment(fragment) => {
                visit_root_fields(document, &fragment.node.selection_set.node, nesting, visit);
            }
            Selection::FragmentSpread(spread) if nesting < MAX_FRAGMENT_NESTING => {
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    visit_root_fields(document, &fragment.node.selection_set.node, nesting + 1, visit);
                }
            }
            Selection::FragmentSpread(_) => {}
        }
    }
}

/// The labels of one operation: indexes into [`OPERATION_LABELS`] and `OPERATION_TYPES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Labels {
    operation: usize,
    kind: usize,
}

const INVALID_REQUEST: Labels = Labels {
    operation: INVALID,
    kind: UNKNOWN_TYPE,
};

fn labels_of(document: &ExecutableDocument, selection_set: &SelectionSet, ty: OperationType) -> Labels {
    let mut fields = Vec::new();
    visit_root_fields(document, selection_set, 0, &mut |name| fields.push(name));
    Labels {
        operation: operation_index(fields),
        kind: match ty {
            OperationType::Query => 0,
            OperationType::Mutation => 1,
            OperationType::Subscription => 2,
        },
    }
}

/// One handle per series, taken once.
struct Handles {
    /// `[operation][type]`.
    durations: Vec<Histogram>,
    /// `[operation][code]`.
    errors: Vec<Counter>,
}

impl Handles {
    fn get() -> &'static Self {
        static HANDLES: OnceLock<Handles> = OnceLock::new();
        HANDLES.get_or_init(|| {
            let mut durations = Vec::new();
            let mut errors = Vec::new();
            for operation in OPERATION_LABELS {
                for kind in OPERATION_TYPES {
                    durations.push(metrics::histogram!(REQUEST_DURATION, "operation" => operation, "type" => kind));
                }
                for code in ERROR_CODES {
                    errors.push(metrics::counter!(ERRORS, "operation" => operation, "code" => code));
                }
            }
            Self { durations, errors }
        })
    }

    fn record(&self, labels: Labels, response: &Response, started: Instant) {
        self.durations[labels.operation * OPERATION_TYPES.len() + labels.kind].record(started.elapsed());
        for error in &response.errors {
            let code = match error.extensions.as_ref().and_then(|e| e.get("code")) {
                Some(Value::String(code)) => ERROR_CODES.iter().position(|known| known == code),
                _ => None,
            };
            self.errors[labels.operation * ERROR_CODES.len() + code.unwrap_or(OTHER_CODE)].increment(1);
        }
    }
}

/// The schema extension recording [`REQUEST_DURATION`] and [`ERRORS`]. Register it after the
/// [`crate::guard::OperationGuard`], so that a refused operation is still labelled by its root
/// field.
pub struct RequestMetrics;

impl ExtensionFactory for RequestMetrics {
    fn create(&self) -> std::sync::Arc<dyn Extension> {
        std::sync::Arc::new(RequestMetricsExtension::default())
    }
}

/// Per request: the operations the document holds, then the one executed.
#[derive(Default)]
struct RequestMetricsExtension {
    state: Mutex<RequestState>,
}

#[derive(Default)]
struct RequestState {
    /// Set by the parse (a one-operation document) or by the execution (the one picked).
    chosen: Option<Labels>,
    /// The operations of a many-operation document, by name, until one is picked.
    named: Vec<(Name, Labels)>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for RequestMetricsExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let labels = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .chosen
            .unwrap_or(INVALID_REQUEST);
        Handles::get().record(labels, &response, started);
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &document.operations {
            DocumentOperations::Single(operation) => {
                state.chosen = Some(labels_of(
                    &document,
                    &operation.node.selection_set.node,
                    operation.node.ty,
                ));
            }
            DocumentOperations::Multiple(operations) => {
                state.named = operations
                    .iter()
                    .map(|(name, operation)| {
                        let labels = labels_of(&document, &operation.node.selection_set.node, operation.node.ty);
                        (name.clone(), labels)
                    })
                    .collect();
            }
        }
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.chosen.is_none() {
                let picked = match operation_name {
                    Some(wanted) => state.named.iter().find(|(name, _)| name.as_str() == wanted),
                    None if state.named.len() == 1 => state.named.first(),
                    None => None,
                };
                state.chosen = picked.map(|(_, labels)| *labels);
            }
        }
        next.run(ctx, operation_name).await
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    /// The labels of each operation of the document, sorted (the parser keeps several
    /// operations in a hash map).
    fn labels(query: &str) -> Vec<(&'static str, &'static str)> {
        let document = parse_query(query).unwrap();
        let mut labels: Vec<_> = document
            .operations
            .iter()
            .map(|(_, operation)| {
                let labels = labels_of(&document, &operation.node.selection_set.node, operation.node.ty);
                (OPERATION_LABELS[labels.operation], OPERATION_TYPES[labels.kind])
            })
            .collect();
        labels.sort_unstable();
        labels
    }

    #[test]
    fn the_label_is_the_root_field_never_the_clients_operation_name_or_alias() {
        assert_eq!(
            labels("mutation DropTablesAndCallMeAnything { x: startReport { reportId } }"),
            [("startReport", "mutation")]
        );
        assert_eq!(
            labels("query Q1 { reportStatus(id: 1) { status } } query Q2 { me { id } }"),
            [("me", "query"), ("reportStatus", "query")]
        );
    }

    #[test]
    fn fields_the_schema_lacks_mixes_and_introspection_get_fixed_labels() {
        assert_eq!(labels("{ aFieldAnAttackerMadeUp }"), [("unknown", "query")]);
        assert_eq!(
            labels("{ me { id } reportStatus(id: 1) { status } }"),
            [("multiple", "query")]
        );
        assert_eq!(labels("{ a: me { id } b: me { id } }"), [("me", "query")]);
        assert_eq!(labels("{ __schema { types { name } } }"), [("introspection", "query")]);
        assert_eq!(
            labels("query { ...F } fragment F on Query { ... on Query { report(id: 1) { id } } }"),
            [("report", "query")]
        );
    }

    #[test]
    fn a_thousand_made_up_fields_and_names_still_make_only_the_fixed_labels() {
        let values: std::collections::HashSet<&str> = (0..1000)
            .map(|i| operation_label([format!("field{i}").as_str()]))
            .chain((0..1000).map(|i| operation_label(["me", format!("f{i}").as_str()])))
            .collect();
        assert_eq!(values, ["unknown", "multiple"].into_iter().collect());
    }

    #[test]
    fn every_root_field_of_the_schema_has_a_label_of_its_own() {
        let sdl = crate::schema_sdl();
        let schema = async_graphql::parser::parse_schema(&sdl).unwrap();
        let mut roots = Vec::new();
        for definition in &schema.definitions {
            if let async_graphql::parser::types::TypeSystemDefinition::Type(ty) = definition
                && matches!(ty.node.name.node.as_str(), "Query" | "Mutation" | "Subscription")
                && let async_graphql::parser::types::TypeKind::Object(object) = &ty.node.kind
            {
                roots.extend(object.fields.iter().map(|f| f.node.name.node.to_string()));
            }
        }
        assert!(!roots.is_empty());
        for root in roots {
            assert!(
                ROOT_FIELDS.contains(&root.as_str()),
                "{root} needs its own label in ROOT_FIELDS"
            );
        }
    }
}
