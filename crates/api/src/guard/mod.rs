//! Refuses operations that would cost too much, before anything executes.
//!
//! The checks ([`shape`]) run on the parsed document in a schema extension's `parse_query`
//! hook: after parsing, before validation and execution, so a refused request writes nothing,
//! hashes nothing and reaches no database. Its one error carries `extensions.code =
//! OPERATION_REFUSED` and `extensions.reason`.
//!
//! The same checks apply to every operation of a graphql-ws socket (each `subscribe` message
//! is parsed through this hook too). There, in addition, only subscriptions are served, each
//! selecting exactly one root field (one `reportUpdated`); over HTTP, subscriptions are
//! refused ([`shape::check_transport`]).

pub mod shape;

use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Pos, Request, ServerResult, Variables};

use crate::error::ApiError;

/// Connection data of a graphql-ws socket: tells the guard which transport an operation came
/// over.
#[derive(Clone, Copy, Debug)]
pub struct OverWebSocket;

/// The extension factory to register on the schema.
pub struct OperationGuard {
    /// Whether `__schema` and `__type` are answered.
    pub introspection: bool,
}

impl ExtensionFactory for OperationGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationGuardExtension {
            introspection: self.introspection,
            operation_name: Mutex::default(),
        })
    }
}

/// Created per request (and per socket operation).
struct OperationGuardExtension {
    introspection: bool,
    /// The request's `operationName`, seen before parsing: which operation the transport
    /// check applies to.
    operation_name: Mutex<Option<String>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for OperationGuardExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        *self.operation_name.lock().unwrap_or_else(PoisonError::into_inner) = request.operation_name.clone();
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let over_websocket = ctx.data_opt::<OverWebSocket>().is_some();
        let operation_name = self
            .operation_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        shape::check(&document, self.introspection)
            .and_then(|()| shape::check_transport(&document, operation_name.as_deref(), over_websocket))
            .map_err(|refusal| {
                tracing::info!(reason = refusal.reason(), "operation refused before execution");
                let mut error =
                    async_graphql::Error::from(ApiError::OperationRefused(refusal)).into_server_error(Pos::default());
                // The refusal is about the whole operation, not a place in it.
                error.locations.clear();
                error
            })?;
        Ok(document)
    }
}
