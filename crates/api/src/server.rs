//! The axum application around the schema.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, Request, StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{Auth, TokenService};
use crate::schema::{ApiDeps, AppSchema, build_schema};

/// Largest request body accepted. async-graphql's extractor reads the body itself, so axum's
/// default limit does not apply: without this layer a client could stream gigabytes.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// A request still running after this is answered `408` and dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Where and how the API listens.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Address to bind; port 0 picks a free port (tests).
    pub listen_addr: SocketAddr,
}

#[derive(Clone)]
struct AppState {
    schema: AppSchema,
    tokens: TokenService,
    deps: ApiDeps,
}

/// A bound, not yet serving, API server.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Binds the listener and builds the routes.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn build(settings: &ApiSettings, deps: ApiDeps) -> std::io::Result<Self> {
        let listener = TcpListener::bind(settings.listen_addr).await?;
        let state = AppState {
            schema: build_schema(deps.clone()),
            tokens: deps.tokens.clone(),
            deps,
        };
        Ok(Self {
            listener,
            router: router(state),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    ///
    /// # Errors
    /// When the OS cannot tell.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish.
    ///
    /// # Errors
    /// Accept-loop I/O errors.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn router(state: AppState) -> Router {
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!(
                "http",
                method = %request.method(),
                path = %request.uri().path(),
                request_id,
                tenant_id = tracing::field::Empty,
                user_id = tracing::field::Empty,
            )
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES));
    Router::new()
        // GET serves GraphiQL only: queries over GET are not executed, so no mutation can be
        // triggered by a link or an <img> tag.
        .route("/graphql", get(graphiql).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(middleware)
        .with_state(state)
}

async fn graphql(State(state): State<AppState>, headers: HeaderMap, request: GraphQLRequest) -> GraphQLResponse {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let auth = state.tokens.authenticate(authorization);
    if let Auth::User(claims) = &auth {
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(claims.tenant_id));
        span.record("user_id", tracing::field::display(claims.user_id));
    }
    state.schema.execute(request.into_inner().data(auth)).await.into()
}

async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

/// Ready when the catalog answers: without it nobody can log in.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.deps.accounts.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error.cause_chain = ?e, "catalog not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "catalog unavailable")
        }
    }
}
