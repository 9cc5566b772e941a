//! Command line and environment. Every option can be given as a flag or as the environment
//! variable named in `--help`; values of secret variables are never echoed.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use liquidity_api::client_ip::TrustedProxies;
use liquidity_core::db;
use liquidity_core::tenancy::{PoolSettings, TenantRegistry, parse_tenants_config};
use secrecy::SecretString;
use sqlx::PgPool;

/// Liquidity: multi-tenant report generation.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per process role; each role scales by running more replicas.
#[derive(Subcommand)]
pub enum Command {
    /// Serve the GraphQL API (POST /graphql, GraphiQL on GET /graphql).
    Api(ApiArgs),
    /// Create the login role of each database (the user and password of its URL), the
    /// databases owned by them, and Debezium's replication role; revoke CONNECT from PUBLIC.
    /// Runs as a superuser (PG_ADMIN_URL). Idempotent.
    Provision(ProvisionArgs),
    /// Migrate the catalog and every tenant database of TENANTS_CONFIG, and register the
    /// tenants in the catalog. Idempotent.
    Migrate(MigrateArgs),
    /// List the tenant registry: id, name, database, and whether it is reachable.
    Tenants(TenancyArgs),
    /// Print the GraphQL schema (SDL), as committed in schema.graphql.
    Schema,
    /// Consume Debezium change events from Pub/Sub: start a fetch workflow per new report
    /// content, finish reports whose contents are all final; plus the periodic reconciler.
    CdcWorker(crate::commands::cdc_worker::CdcWorkerArgs),
    /// Run the Temporal worker of the `fetchReportContent` workflows, which poll the source
    /// servers and record what they answer.
    WorkflowWorker(crate::commands::workflow_worker::WorkflowWorkerArgs),
    /// Run the simulator of the three external source servers (real HTTP servers).
    Sources(crate::commands::sources::SourcesArgs),
    /// Render Debezium's configuration from TENANTS_CONFIG: JSON for the local relay on stdout,
    /// or one Debezium Server application.properties per tenant.
    CdcConfig(CdcConfigArgs),
    /// Create the Pub/Sub topics and subscriptions of the CDC path (change events, dead
    /// letters) where missing. Idempotent; the one place they are created.
    PubsubSetup(crate::commands::cdc_worker::PubSubArgs),
}

/// Logging and traces.
#[derive(Args)]
pub struct LogArgs {
    /// Log filter, `tracing` EnvFilter syntax (e.g. `info` or `info,liquidity_api=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info,sqlx=warn", global = true)]
    pub log_level: String,
    /// `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint that receives traces, e.g. `http://127.0.0.1:4317` (Jaeger, an
    /// OpenTelemetry Collector). Unset: no exporter is built and no span leaves the process.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otel_exporter_otlp_endpoint: Option<String>,
}

/// Log line format.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// The tenant registry.
#[derive(Args)]
pub struct TenancyArgs {
    /// JSON array of tenants: `[{"id":"<uuid>","name":"t1","description":"...",
    /// "databaseUrl":"postgres://...","maxConnections":10}]`.
    #[arg(long, env = "TENANTS_CONFIG", hide_env_values = true)]
    pub tenants_config: String,
    /// How long a request waits for a free tenant connection before failing.
    #[arg(long, env = "TENANT_ACQUIRE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub tenant_acquire_timeout: Duration,
}

impl TenancyArgs {
    /// The validated registry; no connection is opened yet.
    pub fn registry(&self) -> anyhow::Result<Arc<TenantRegistry>> {
        let tenants = parse_tenants_config(&self.tenants_config)?;
        let settings = PoolSettings {
            acquire_timeout: self.tenant_acquire_timeout,
            ..PoolSettings::default()
        };
        Ok(Arc::new(TenantRegistry::new(tenants, settings)))
    }
}

/// The catalog database.
#[derive(Args)]
pub struct CatalogArgs {
    /// URL of the catalog database (tenants, users).
    #[arg(long, env = "CATALOG_DATABASE_URL", hide_env_values = true)]
    pub catalog_database_url: String,
    /// Pool size of the catalog in this process.
    #[arg(long, env = "CATALOG_MAX_CONNECTIONS", default_value_t = 10)]
    pub catalog_max_connections: u32,
}

impl CatalogArgs {
    /// A lazily connecting pool of the catalog.
    pub fn pool(&self) -> anyhow::Result<PgPool> {
        let options = db::parse_database_url(&self.catalog_database_url).context("CATALOG_DATABASE_URL is invalid")?;
        Ok(db::catalog_pool(
            options,
            self.catalog_max_connections,
            Duration::from_secs(5),
        ))
    }
}

/// `liquidity api`.
#[derive(Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub tenancy: TenancyArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// HS256 signing secret of the JWTs, at least 32 bytes.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: SecretString,
    /// Lifetime of issued tokens (`1h`, `15m`...).
    #[arg(long, env = "JWT_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub jwt_ttl: Duration,
    /// Answer introspection (`__schema`, `__type`). Production deployments that publish no
    /// schema set it to false.
    #[arg(long, env = "GRAPHQL_INTROSPECTION", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub graphql_introspection: bool,
    /// Serve GraphiQL on `GET /graphql`. Production deployments set it to false.
    #[arg(long, env = "GRAPHIQL", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub graphiql: bool,
    /// Comma-separated addresses or networks (`10.0.0.0/8`) of the reverse proxies whose
    /// `X-Forwarded-For` names the client. Empty: the client is the socket's peer.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// Password hashes running at once (each holds 19 MiB and a thread for ~20 ms; more than
    /// the cores only adds memory). Default: the number of cores.
    #[arg(long, env = "HASH_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..))]
    pub hash_concurrency: Option<u16>,
    /// How long a login or register waits for a free hash slot before `UNAVAILABLE` (HTTP 503).
    /// Default: 2s.
    #[arg(long, env = "HASH_QUEUE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub hash_queue_timeout: Option<Duration>,
    /// `login` and `register` per client IP and minute, sustained. With the burst below, a
    /// person, or an office behind one NAT, never meets it, while a script gets a password
    /// guess every 2 s at most. Per replica: N API replicas admit N times this.
    #[arg(long, env = "AUTH_IP_RATE", default_value = "30")]
    pub auth_ip_rate: NonZeroU32,
    /// `login` and `register` one client IP may send at once after a quiet period.
    #[arg(long, env = "AUTH_IP_BURST", default_value = "10")]
    pub auth_ip_burst: NonZeroU32,
}

/// `liquidity migrate`.
#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub tenancy: TenancyArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Replication role of Debezium: after migrating a tenant database, its owner grants this
    /// role SELECT on `report_contents` and `cdc_heartbeat` and INSERT, UPDATE on
    /// `cdc_heartbeat`. Unset: no grant (Debezium connects some other way).
    #[arg(long, env = "CDC_DATABASE_USER")]
    pub cdc_database_user: Option<String>,
}

/// `liquidity provision`.
#[derive(Args)]
pub struct ProvisionArgs {
    /// Superuser URL of the PostgreSQL server that holds the catalog and every tenant database
    /// (e.g. its `postgres` database). Only this command uses it; services never do.
    #[arg(long, env = "PG_ADMIN_URL", hide_env_values = true)]
    pub pg_admin_url: SecretString,
    /// JSON tenant registry (as for every role); each `databaseUrl` names the owner role of
    /// that database and its password.
    #[arg(long, env = "TENANTS_CONFIG", hide_env_values = true)]
    pub tenants_config: String,
    /// URL of the catalog database; its user and password become the catalog's owner role.
    #[arg(long, env = "CATALOG_DATABASE_URL", hide_env_values = true)]
    pub catalog_database_url: String,
    /// Replication role of Debezium, allowed to connect to every tenant database (not the
    /// catalog). Unset: no replication role is provisioned.
    #[arg(long, env = "CDC_DATABASE_USER", requires = "cdc_database_password")]
    pub cdc_database_user: Option<String>,
    /// Password of CDC_DATABASE_USER.
    #[arg(long, env = "CDC_DATABASE_PASSWORD", hide_env_values = true)]
    pub cdc_database_password: Option<SecretString>,
}

/// What `liquidity cdc-config` renders.
#[derive(Clone, Copy, ValueEnum)]
pub enum CdcConfigFormat {
    /// JSON on stdout for `cdc/relay/relay.py`; holds passwords.
    Relay,
    /// `<out-dir>/<tenant name>/application.properties` for Debezium Server, one per tenant.
    DebeziumServer,
}

/// `liquidity cdc-config`.
#[derive(Args)]
pub struct CdcConfigArgs {
    /// What to render.
    #[arg(long, value_enum)]
    pub format: CdcConfigFormat,
    /// Where the Debezium Server files go (`--format debezium-server`).
    #[arg(long, required_if_eq("format", "debezium-server"))]
    pub out_dir: Option<PathBuf>,
    /// JSON tenant registry (as for every role).
    #[arg(long, env = "TENANTS_CONFIG", hide_env_values = true)]
    pub tenants_config: String,
    /// Replication role of Debezium; replaces the user of every databaseUrl, which owns its
    /// database. Unset: each databaseUrl's own user.
    #[arg(long, env = "CDC_DATABASE_USER")]
    pub cdc_database_user: Option<String>,
    /// Password of CDC_DATABASE_USER: written into the relay's JSON, and into Debezium Server
    /// files only with --inline-secrets.
    #[arg(long, env = "CDC_DATABASE_PASSWORD", hide_env_values = true)]
    pub cdc_database_password: Option<SecretString>,
    /// Where Pub/Sub is: the same settings as the CDC worker's (the subscription is not used).
    #[command(flatten)]
    pub pubsub: crate::commands::cdc_worker::PubSubArgs,
    /// Debezium Server's offsets store, e.g. `jdbc:postgresql://host:5432/cdc`. Unset: each
    /// tenant's own database (the replication role then needs CREATE on its public schema).
    #[arg(long, env = "CDC_OFFSETS_JDBC_URL")]
    pub cdc_offsets_jdbc_url: Option<String>,
    /// User of CDC_OFFSETS_JDBC_URL. Unset: the database user above.
    #[arg(long, env = "CDC_OFFSETS_USER")]
    pub cdc_offsets_user: Option<String>,
    /// Write passwords into the Debezium Server files (local tries only). Without it they
    /// reference ${TENANT_DB_PASSWORD} and ${CDC_OFFSETS_PASSWORD}, which each instance reads
    /// from its environment (a secret).
    #[arg(long, env = "CDC_INLINE_SECRETS", default_value_t = false)]
    pub inline_secrets: bool,
}
