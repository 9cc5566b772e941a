//! Refuses operations that would cost too much, before anything executes.
//!
//! The checks ([`shape`]) run on the parsed document in a schema extension's `parse_query`
//! hook: after parsing, before validation and execution, so a refused request writes nothing,
//! hashes nothing and reaches no database. Its one error carries `extensions.code =
//! OPERATION_REFUSED` and `extensions.reason`.

pub mod shape;

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Pos, ServerResult, Variables};

use crate::error::ApiError;

/// The extension factory to register on the schema.
pub struct OperationGuard {
    /// Whether `__schema` and `__type` are answered.
    pub introspection: bool,
}

impl ExtensionFactory for OperationGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationGuardExtension {
            introspection: self.introspection,
        })
    }
}

struct OperationGuardExtension {
    introspection: bool,
}

#[async_graphql::async_trait::async_trait]
impl Extension for OperationGuardExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        shape::check(&document, self.introspection).map_err(|refusal| {
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
