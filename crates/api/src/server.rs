//! The axum application around the schema.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{Auth, TokenService};
use crate::client_ip::TrustedProxies;
use crate::documents::DocumentCache;
use crate::error::{RATE_LIMITED, RETRY_AFTER_SECONDS, UNAVAILABLE};
use crate::schema::{ApiDeps, AppSchema, build_schema};

/// Largest request body accepted. async-graphql's extractor reads the body itself, so axum's
/// default limit does not apply: without this layer a client could stream gigabytes.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// A request still running after this is answered `408` and dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied `x-request-id` we keep; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Where and how the API listens.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Address to bind; port 0 picks a free port (tests).
    pub listen_addr: SocketAddr,
    /// Serve GraphiQL on `GET /graphql`.
    pub graphiql: bool,
    /// Answer `__schema` and `__type`.
    pub introspection: bool,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

/// Shared by every request behind one `Arc`: axum clones the state per request, and a clone of
/// the token service's keys and validation sets allocated on every request.
struct AppState {
    schema: AppSchema,
    tokens: TokenService,
    deps: ApiDeps,
    trusted_proxies: TrustedProxies,
    graphiql: bool,
    documents: DocumentCache,
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
            schema: build_schema(deps.clone(), settings.introspection),
            tokens: deps.tokens.clone(),
            deps,
            trusted_proxies: settings.trusted_proxies.clone(),
            graphiql: settings.graphiql,
            documents: DocumentCache::default(),
        };
        Ok(Self {
            listener,
            router: router(Arc::new(state)),
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
        let app = self.router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await
    }
}

fn router(state: Arc<AppState>) -> Router {
    let middleware = ServiceBuilder::new()
        .layer(axum::middleware::map_request(drop_unsafe_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
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
                })
                // No line per 5xx answer: a 503 is load shedding (hash slots full), which a login
                // flood produces hundreds of times a second and `lqdty_api_graphql_errors_total`
                // counts; an internal error is logged where it happens, with its cause
                // (`ApiError::Internal`).
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES));
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql))
        .merge(liquidity_observability::routes(ops(&state.deps)))
        .layer(middleware)
        .with_state(state)
}

async fn graphql(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let auth = state.tokens.authenticate(authorization);
    if let Auth::User(claims) = &auth {
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(claims.tenant_id));
        span.record("user_id", tracing::field::display(claims.user_id));
    }
    let client = state.trusted_proxies.client_of(peer, &headers);
    let request = state.documents.attach(request.into_inner());
    let response = state.schema.execute(request.data(auth).data(client)).await;
    match refusal_status(&response) {
        Some((status, retry_after)) => (
            status,
            [(header::RETRY_AFTER, HeaderValue::from(retry_after))],
            GraphQLResponse::from(response),
        )
            .into_response(),
        None => GraphQLResponse::from(response).into_response(),
    }
}

/// A request refused as a whole (no data) because of a rate limit or saturation is answered
/// with its HTTP status, 429 or 503, and `Retry-After`, so that proxies and HTTP clients back
/// off without reading GraphQL errors. Everything else stays 200, as GraphQL over HTTP says.
fn refusal_status(response: &async_graphql::Response) -> Option<(StatusCode, u64)> {
    if response.data != async_graphql::Value::Null {
        return None;
    }
    response.errors.iter().find_map(|error| {
        let extensions = error.extensions.as_ref()?;
        let status = match extensions.get("code")? {
            async_graphql::Value::String(code) if code == RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
            async_graphql::Value::String(code) if code == UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            _ => return None,
        };
        let retry_after = match extensions.get(RETRY_AFTER_SECONDS)? {
            async_graphql::Value::Number(seconds) => seconds.as_u64()?,
            _ => return None,
        };
        Some((status, retry_after))
    })
}

/// A client-supplied `x-request-id` reaches our logs and is echoed back: keep it only when it
/// is a short token of safe characters, so that nobody can inject log lines, markup or megabytes;
/// otherwise [`SetRequestIdLayer`] generates a fresh one.
async fn drop_unsafe_request_id<B>(mut request: Request<B>) -> Request<B> {
    let safe = request
        .headers()
        .get(&REQUEST_ID)
        .is_none_or(|value| is_safe_request_id(value.as_bytes()));
    if !safe {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// 1 to [`MAX_REQUEST_ID_LEN`] characters of `A-Z a-z 0-9 - _ . :`.
fn is_safe_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// `GET /graphql` never executes an operation from its URL, so no mutation can be triggered by
/// a link or an `<img>` tag: it upgrades to a graphql-ws socket (subscriptions, authenticated
/// in `connection_init`, see [`crate::socket`]) or serves GraphiQL, or answers 405 when
/// GraphiQL is off.
async fn graphql_get(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => {
            let client = state.trusted_proxies.client_of(peer, &headers);
            crate::socket::upgrade(upgrade, &headers, state.schema.clone(), state.tokens.clone(), client)
        }
        Err(_) if state.graphiql => Html(GraphiQLSource::build().endpoint("/graphql").finish()).into_response(),
        Err(_) => (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response(),
    }
}

/// `/healthz`, `/readyz` and `/metrics` on the API's own port. Ready when the catalog answers:
/// without it nobody can log in (a tenant database down only affects its tenant, so it does
/// not make the replica unready).
fn ops(deps: &ApiDeps) -> liquidity_observability::Ops {
    let accounts = deps.accounts.clone();
    liquidity_observability::Ops {
        readiness: liquidity_observability::Readiness::new().check("catalog", move || {
            let accounts = accounts.clone();
            async move { accounts.ping().await }
        }),
        pools: liquidity_observability::PoolGauges::new(deps.registry.clone())
            .with_catalog(deps.accounts.catalog().clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_safe_request_id;

    #[test]
    fn only_short_tokens_of_safe_characters_are_kept_as_request_ids() {
        assert!(is_safe_request_id(b"0d6c1a3e-7f2b-4c55-9a0e-3b2f1c4d5e6f"));
        assert!(is_safe_request_id(b"trace:abc_123.x"));
        assert!(!is_safe_request_id(b""));
        assert!(!is_safe_request_id("a".repeat(65).as_bytes()));
        assert!(!is_safe_request_id(b"id\nlevel=ERROR forged"));
        assert!(!is_safe_request_id(b"<script>"));
        assert!(!is_safe_request_id(b"a b"));
    }
}
