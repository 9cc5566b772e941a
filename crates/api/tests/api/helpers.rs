use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use liquidity_api::auth::{Claims, TokenService};
use liquidity_api::client_ip::TrustedProxies;
use liquidity_api::throttle::{IpQuota, IpThrottle};
use liquidity_api::{ApiDeps, ApiSettings, Application};
use liquidity_core::accounts::{Accounts, HashLimits, PasswordHasher};
use liquidity_core::tenancy::{PoolSettings, TenantRegistry, parse_tenants_config};
use liquidity_test_support::TestDatabases;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util_shim::Shutdown;

/// A running API over fresh databases with two tenants.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub dbs: TestDatabases,
    pub registry: Arc<TenantRegistry>,
    pub tokens: TokenService,
    _shutdown: Shutdown,
}

/// A registered user and their token.
pub struct TestUser {
    pub id: String,
    pub token: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// What a test may change before its app starts.
pub struct AppConfig {
    /// The tenant registry JSON.
    pub tenants: Vec<Value>,
    pub settings: ApiSettings,
    pub hash_limits: HashLimits,
    pub ip_quota: IpQuota,
}

/// Like [`spawn_app`], letting the test edit the configuration before the app starts. The
/// defaults are the binary's, but for a per-IP quota high enough that tests sharing
/// 127.0.0.1 never meet it (the throttle tests set their own).
pub async fn spawn_app_with(edit: impl FnOnce(&mut AppConfig)) -> TestApp {
    liquidity_test_support::init_tracing();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dbs = TestDatabases::create(2, 5).await;
    let mut config = AppConfig {
        tenants: serde_json::from_str(&dbs.tenants_config(5)).unwrap(),
        settings: ApiSettings {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            graphiql: true,
            introspection: true,
            trusted_proxies: TrustedProxies::default(),
        },
        hash_limits: HashLimits::default(),
        ip_quota: IpQuota {
            per_minute: NonZeroU32::new(10_000).unwrap(),
            burst: NonZeroU32::new(10_000).unwrap(),
        },
    };
    edit(&mut config);
    let registry = Arc::new(TenantRegistry::new(
        parse_tenants_config(&Value::Array(config.tenants).to_string()).unwrap(),
        PoolSettings {
            acquire_timeout: Duration::from_secs(2),
            ..PoolSettings::default()
        },
    ));
    let catalog = sqlx::PgPool::connect_lazy(&dbs.catalog_url()).unwrap();
    let secret = SecretString::from(format!("test-secret-{}", uuid::Uuid::new_v4()));
    let tokens = TokenService::new(&secret, Duration::from_secs(600)).unwrap();
    let deps = ApiDeps {
        accounts: Accounts::new(catalog, PasswordHasher::new(config.hash_limits).unwrap()),
        registry: registry.clone(),
        tokens: tokens.clone(),
        auth_throttle: Arc::new(IpThrottle::new(config.ip_quota)),
    };
    let app = Application::build(&config.settings, deps).await.unwrap();
    let addr = app.local_addr().unwrap();
    let (shutdown, stopped) = Shutdown::new();
    tokio::spawn(app.run_until_stopped(stopped));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        dbs,
        registry,
        tokens,
        _shutdown: shutdown,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Executes a GraphQL request and returns the whole response body; the HTTP status must
    /// be a success.
    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self.post(query, variables);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "HTTP {}", response.status());
        response.json().await.unwrap()
    }

    /// A GraphQL POST to send as it is or with more headers, for tests of the HTTP layer.
    pub fn post(&self, query: &str, variables: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
    }

    pub async fn register(&self, tenant: usize, username: &str, password: &str) -> Value {
        let tenant_id = self.dbs.tenants[tenant].id.to_string();
        self.graphql(
            REGISTER,
            json!({ "input": { "tenantId": tenant_id, "username": username, "password": password, "taxId": "TAX-0001" } }),
            None,
        )
        .await
    }

    /// Registers a user and returns their id and token.
    pub async fn user(&self, tenant: usize, username: &str) -> TestUser {
        let body = self.register(tenant, username, "correct-horse-battery").await;
        let payload = &body["data"]["register"];
        assert!(payload.is_object(), "register failed: {body}");
        TestUser {
            id: payload["user"]["id"].as_str().unwrap().to_owned(),
            token: payload["token"].as_str().unwrap().to_owned(),
        }
    }

    pub fn claims(&self, token: &str) -> Claims {
        self.tokens.verify(token).unwrap()
    }
}

pub const REGISTER: &str = "mutation($input: RegisterInput!) {
  register(input: $input) { token user { id tenantId username taxId } }
}";
pub const LOGIN: &str = "mutation($input: LoginInput!) {
  login(input: $input) { token user { id tenantId username taxId } }
}";
pub const ME: &str = "{ me { id tenantId username taxId } }";
pub const START_REPORT: &str = "mutation { startReport { reportId } }";
pub const REPORT_STATUS: &str = "query($id: ID!) { reportStatus(id: $id) { status } }";
pub const REPORT: &str = "query($id: ID!) {
  report(id: $id) { id tenantId userId status startedAt finishedAt contents { id source status data createdAt lastRunAt } }
}";

/// The `extensions.code` of the first error of a response.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// Stops the server when the test ends.
mod tokio_util_shim {
    use tokio::sync::oneshot;

    pub struct Shutdown(Option<oneshot::Sender<()>>);

    impl Shutdown {
        pub fn new() -> (Self, impl Future<Output = ()> + Send + 'static) {
            let (tx, rx) = oneshot::channel();
            (Self(Some(tx)), async move {
                let _ = rx.await;
            })
        }
    }

    impl Drop for Shutdown {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
}
