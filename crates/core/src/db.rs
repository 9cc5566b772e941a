//! Connection options and the embedded migrations of both database kinds.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use url::Url;

/// Migrations of the catalog database (`tenant`, `user`).
pub static CATALOG_MIGRATOR: Migrator = sqlx::migrate!("./migrations/catalog");

/// Migrations of every tenant database (`report`, `report_contents`, CDC publication).
pub static TENANT_MIGRATOR: Migrator = sqlx::migrate!("./migrations/tenant");

/// `application_name` of every connection we open, so operators (and the tests) can tell our
/// connections apart in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "liquidity";

/// Why a database URL was refused. Never carries the URL itself: it may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    /// Not a URL at all.
    #[error("not a valid URL ({0})")]
    Syntax(#[from] url::ParseError),
    /// A URL, but not one of PostgreSQL.
    #[error("scheme must be postgres:// or postgresql://")]
    Scheme,
    /// No database name in the path.
    #[error("the URL names no database")]
    NoDatabase,
    /// sqlx refused one of its parameters.
    #[error("unsupported connection parameter")]
    Options(#[source] sqlx::Error),
}

/// Parses a `postgres://` URL into connect options tagged with our application name.
///
/// # Errors
/// [`DatabaseUrlError`] when the URL is malformed, not PostgreSQL or names no database.
pub fn parse_database_url(raw: &str) -> Result<PgConnectOptions, DatabaseUrlError> {
    let url = Url::parse(raw)?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(DatabaseUrlError::Scheme);
    }
    if url.path().trim_start_matches('/').is_empty() {
        return Err(DatabaseUrlError::NoDatabase);
    }
    let options: PgConnectOptions = url.as_str().parse().map_err(DatabaseUrlError::Options)?;
    Ok(options.application_name(APPLICATION_NAME))
}

/// `host:port/database` of some connect options: what may be logged about a database.
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("?")
    )
}

/// The password of some connect options (empty when none): for whoever must hand it on,
/// provisioning a role or rendering a Debezium configuration. Never log it.
pub fn password(options: &PgConnectOptions) -> String {
    use sqlx::ConnectOptions as _;
    // sqlx keeps the password private; its URL form carries it percent-encoded.
    let encoded = options.to_url_lossy();
    percent_encoding::percent_decode_str(encoded.password().unwrap_or_default())
        .decode_utf8_lossy()
        .into_owned()
}

/// A connection idle for less than this is handed out without a ping first (the bypass window
/// of HikariCP's `aliveBypassWindowMs`, 500 ms there too).
pub const PING_IF_IDLE_FOR: Duration = Duration::from_millis(500);

/// Pool options that ping a connection before handing it out only when it sat idle for
/// [`PING_IF_IDLE_FOR`] or longer.
///
/// sqlx pings every connection on acquire by default (`test_before_acquire`), and again when
/// it is returned: two extra round trips per query on top of the query's one, which tripled the
/// database round trips of a `reportStatus`. The ping on return stays (sqlx always does it, and
/// it catches a connection left mid-query), so a connection reused within the window was
/// alive a moment ago; one idle for longer, possibly across a server restart, is still checked
/// and replaced when dead.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// A lazily connecting pool of the catalog database.
///
/// The catalog is small and hot (every login), so a handful of connections is enough per
/// API replica; see the README's connection budget.
pub fn catalog_pool(options: PgConnectOptions, max_connections: u32, acquire_timeout: Duration) -> PgPool {
    pool_options()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options)
}

/// Tables Debezium reads: the captured table, and the heartbeat table it upserts.
const CDC_GRANTS: [&str; 2] = [
    "GRANT SELECT ON report_contents, cdc_heartbeat TO %I",
    // Debezium's heartbeat.action.query: INSERT ... ON CONFLICT (id) DO UPDATE
    "GRANT INSERT, UPDATE ON cdc_heartbeat TO %I",
];

/// Grants Debezium's replication role what it reads and writes in a migrated tenant database:
/// `SELECT` on `report_contents` (the snapshot) and `cdc_heartbeat`, `INSERT, UPDATE` on
/// `cdc_heartbeat` (its heartbeat query). Nothing else: it cannot touch `report`, nor write a
/// report content. Run by the database's owner after [`TENANT_MIGRATOR`] (`liquidity migrate`);
/// the shipped migrations cannot name the role, which differs per deployment. Idempotent.
///
/// # Errors
/// [`crate::provision::ProvisionError::Unexpected`] when the role does not exist (run
/// `liquidity provision` first) or the connection is not the tables' owner.
pub async fn grant_cdc_access(
    conn: &mut sqlx::PgConnection,
    replication_role: &str,
) -> Result<(), crate::provision::ProvisionError> {
    for grant in CDC_GRANTS {
        crate::provision::execute_formatted(conn, grant, &[replication_role]).await?;
    }
    Ok(())
}
