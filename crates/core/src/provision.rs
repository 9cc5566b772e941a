//! Least privilege in PostgreSQL: one login role per database, owning only that database.
//!
//! [`provision`] makes a server match a [`ProvisionPlan`], idempotently:
//! - the catalog and every tenant database of `TENANTS_CONFIG` are owned by the login role named
//!   in their own URL (with that URL's password), a role that is neither superuser nor able to
//!   create databases, roles or replication connections;
//! - `CONNECT` and `TEMPORARY` are revoked from `PUBLIC` on each of these databases, so a role
//!   reaches only the database it owns: one leaked tenant credential opens one tenant database;
//! - the optional replication role of Debezium may log in, stream (`REPLICATION`) and connect to
//!   the tenant databases, never to the catalog. Its table privileges are granted by the owner
//!   after each migration ([`crate::db::grant_cdc_access`]), because the owner owns the tables.
//!
//! The dev stack (`scripts/dev.sh`), `liquidity provision` and the tests' fresh databases all go
//! through this one function.
//!
//! Role and database names come from configuration, so no SQL here is built by string
//! formatting on the client: every statement is rendered by the server's `format()` (`%I` for
//! identifiers, `%L` for literals, arguments bound as parameters) and then executed. Passwords
//! travel as literals because `CREATE ROLE ... PASSWORD` takes no bind parameters; the server
//! stores them hashed (`password_encryption`, SCRAM by default) and they are never logged here.

use std::collections::HashMap;
use std::fmt;

use anyhow::Context as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

use crate::db;
use crate::tenancy::TenantConfig;

/// Databases a plan may never hand to a role: the server's own.
const RESERVED_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

/// Why a plan was refused or could not be applied. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A URL of the plan has no user or no password.
    #[error("the URL of database {database} must name a user and a password")]
    MissingCredentials {
        /// The database whose URL is incomplete.
        database: String,
    },
    /// A URL names one of the server's own databases.
    #[error("database {database} belongs to the server and cannot be given to a role")]
    ReservedDatabase {
        /// `postgres`, `template0` or `template1`.
        database: String,
    },
    /// Two databases of the plan would share one role: its credential would open both.
    #[error("role {role} would own both {first} and {second}: every database needs a role of its own")]
    SharedRole {
        /// The shared role.
        role: String,
        /// The first database owned by it.
        first: String,
        /// The second one.
        second: String,
    },
    /// The replication role also owns a database of the plan.
    #[error("the replication role {role} must not own a database (it owns {database})")]
    ReplicationRoleOwnsDatabase {
        /// The role.
        role: String,
        /// The database it would own.
        database: String,
    },
    /// A role of the plan is a superuser or the admin running the provisioning itself.
    #[error("role {role} is a superuser or the admin role: services must not connect with it")]
    PrivilegedRole {
        /// The role.
        role: String,
    },
    /// Anything else (connection, SQL).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A login role and its password. `Debug` shows the role only.
#[derive(Clone)]
pub struct RoleLogin {
    /// Role name, as written (case-sensitive, quoted in SQL).
    pub role: String,
    password: String,
}

impl RoleLogin {
    /// A login with this password.
    pub fn new(role: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for RoleLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleLogin")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// One database and the login role that owns it.
#[derive(Clone, Debug)]
pub struct DatabaseOwner {
    /// Database name.
    pub database: String,
    /// Its owner.
    pub owner: RoleLogin,
    /// A tenant database (the replication role may connect) rather than the catalog.
    pub tenant: bool,
}

/// Which roles and databases must exist; validated on construction.
#[derive(Clone, Debug)]
pub struct ProvisionPlan {
    databases: Vec<DatabaseOwner>,
    replication: Option<RoleLogin>,
}

impl ProvisionPlan {
    /// The plan of a catalog URL, a parsed `TENANTS_CONFIG` and an optional Debezium login:
    /// every database is owned by the user of its own URL, with that URL's password.
    ///
    /// # Errors
    /// [`ProvisionError`] when a URL lacks a user or password, names a server database, two
    /// databases share one role, or the replication role owns a database.
    pub fn new(
        catalog: &PgConnectOptions,
        tenants: &[TenantConfig],
        replication: Option<RoleLogin>,
    ) -> Result<Self, ProvisionError> {
        let mut databases = vec![owner_of(catalog, false)?];
        for tenant in tenants {
            databases.push(owner_of(&tenant.connect_options, true)?);
        }
        let mut roles: HashMap<&str, &str> = HashMap::new();
        for db in &databases {
            if RESERVED_DATABASES.contains(&db.database.as_str()) {
                return Err(ProvisionError::ReservedDatabase {
                    database: db.database.clone(),
                });
            }
            if let Some(first) = roles.insert(&db.owner.role, &db.database) {
                return Err(ProvisionError::SharedRole {
                    role: db.owner.role.clone(),
                    first: first.to_owned(),
                    second: db.database.clone(),
                });
            }
        }
        if let Some(replication) = &replication {
            if replication.role.is_empty() || replication.password.is_empty() {
                return Err(ProvisionError::MissingCredentials {
                    database: "(replication role)".to_owned(),
                });
            }
            if let Some(database) = roles.get(replication.role.as_str()) {
                return Err(ProvisionError::ReplicationRoleOwnsDatabase {
                    role: replication.role.clone(),
                    database: (*database).to_owned(),
                });
            }
        }
        Ok(Self { databases, replication })
    }

    /// The catalog first, then the tenant databases in registry order.
    pub fn databases(&self) -> &[DatabaseOwner] {
        &self.databases
    }

    /// The replication role of Debezium, if any.
    pub fn replication(&self) -> Option<&RoleLogin> {
        self.replication.as_ref()
    }
}

fn owner_of(options: &PgConnectOptions, tenant: bool) -> Result<DatabaseOwner, ProvisionError> {
    let database = options.get_database().unwrap_or_default().to_owned();
    let password = db::password(options);
    let role = options.get_username().to_owned();
    if role.is_empty() || password.is_empty() {
        return Err(ProvisionError::MissingCredentials { database });
    }
    Ok(DatabaseOwner {
        database,
        owner: RoleLogin::new(role, password),
        tenant,
    })
}

/// Makes the server of `admin` match the plan; running it again changes nothing.
///
/// `admin` must be a superuser (granting `REPLICATION` needs one) on the server of every
/// database of the plan. A database that already exists keeps its data and is handed to its
/// owner with everything in it (e.g. one created by the superuser of an older dev stack).
///
/// # Errors
/// [`ProvisionError::PrivilegedRole`] when a role of the plan is a superuser or the admin
/// itself; [`ProvisionError::Unexpected`] when the server is unreachable or refuses a statement.
#[tracing::instrument(skip_all, fields(databases = plan.databases.len()))]
pub async fn provision(admin: &PgConnectOptions, plan: &ProvisionPlan) -> Result<(), ProvisionError> {
    let mut conn = admin
        .connect()
        .await
        .with_context(|| format!("connecting as the admin to {} failed", db::describe(admin)))?;
    refuse_privileged_roles(&mut conn, plan).await?;

    if let Some(replication) = &plan.replication {
        ensure_role(
            &mut conn,
            replication,
            "LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS",
        )
        .await?;
    }
    for db in &plan.databases {
        let (database, role) = (db.database.as_str(), db.owner.role.as_str());
        ensure_role(
            &mut conn,
            &db.owner,
            "LOGIN NOREPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS",
        )
        .await?;
        let created = ensure_database(&mut conn, database, role).await?;
        if !created {
            adopt_objects(admin, database, role).await?;
        }
        execute_formatted(&mut conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", &[database]).await?;
        execute_formatted(
            &mut conn,
            "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I",
            &[database, role],
        )
        .await?;
        if let Some(replication) = &plan.replication {
            let statement = if db.tenant {
                "GRANT CONNECT ON DATABASE %I TO %I"
            } else {
                "REVOKE ALL ON DATABASE %I FROM %I"
            };
            execute_formatted(&mut conn, statement, &[database, &replication.role]).await?;
        }
        tracing::info!(database, owner = role, "database provisioned");
    }
    conn.close().await.context("closing the admin connection failed")?;
    Ok(())
}

async fn refuse_privileged_roles(conn: &mut PgConnection, plan: &ProvisionPlan) -> Result<(), ProvisionError> {
    let mut roles: Vec<String> = plan.databases.iter().map(|d| d.owner.role.clone()).collect();
    roles.extend(plan.replication.iter().map(|r| r.role.clone()));
    let privileged: Option<String> = sqlx::query_scalar(
        "SELECT name FROM unnest($1::text[]) AS name \
         WHERE name = current_user OR name = session_user \
            OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name AND rolsuper) \
         LIMIT 1",
    )
    .bind(&roles)
    .fetch_optional(&mut *conn)
    .await
    .context("reading the roles of the plan failed")?;
    match privileged {
        Some(role) => Err(ProvisionError::PrivilegedRole { role }),
        None => Ok(()),
    }
}

/// Creates the role when missing, then sets its attributes and password either way, so a
/// rotated password in the configuration reaches the server.
async fn ensure_role(conn: &mut PgConnection, login: &RoleLogin, attributes: &str) -> Result<(), ProvisionError> {
    let role = login.role.as_str();
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("looking up role {role} failed"))?;
    if !exists
        && let Err(e) = execute_formatted(conn, "CREATE ROLE %I", &[role]).await
        // Another provisioning created it in the meantime: fine, it is altered below.
        && !is_sqlstate(&e, "42710")
    {
        return Err(e);
    }
    // `attributes` is one of our constants, never configuration.
    let statement = format!("ALTER ROLE %I WITH {attributes} PASSWORD %L");
    execute_formatted(conn, &statement, &[role, &login.password]).await
}

/// Creates the database owned by `role`, or gives an existing one to `role`. `true` when it was
/// created now.
async fn ensure_database(conn: &mut PgConnection, database: &str, role: &str) -> Result<bool, ProvisionError> {
    let owner: Option<String> =
        sqlx::query_scalar("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1")
            .bind(database)
            .fetch_optional(&mut *conn)
            .await
            .with_context(|| format!("looking up database {database} failed"))?;
    match owner {
        None => match execute_formatted(conn, "CREATE DATABASE %I OWNER %I", &[database, role]).await {
            Ok(()) => Ok(true),
            Err(e) if is_sqlstate(&e, "42P04") => {
                execute_formatted(conn, "ALTER DATABASE %I OWNER TO %I", &[database, role]).await?;
                Ok(false)
            }
            Err(e) => Err(e),
        },
        Some(owner) if owner == role => Ok(false),
        Some(_) => {
            execute_formatted(conn, "ALTER DATABASE %I OWNER TO %I", &[database, role]).await?;
            Ok(false)
        }
    }
}

/// Hands every schema, relation, type, routine and publication of an existing database to its
/// owner. Objects created before provisioning (by the superuser, say) would otherwise stay out
/// of the owner's reach, and `liquidity migrate` would fail on `_sqlx_migrations`.
async fn adopt_objects(admin: &PgConnectOptions, database: &str, role: &str) -> Result<(), ProvisionError> {
    let mut conn = admin
        .clone()
        .database(database)
        .connect()
        .await
        .with_context(|| format!("connecting as the admin to {database} failed"))?;
    // The role reaches the DO block through a setting, so it is never spliced into SQL text.
    sqlx::query("SELECT set_config('liquidity.new_owner', $1, false)")
        .bind(role)
        .execute(&mut conn)
        .await
        .context("passing the owner to the adoption failed")?;
    conn.execute(ADOPT_OBJECTS)
        .await
        .with_context(|| format!("handing the objects of {database} to {role} failed"))?;
    conn.close().await.context("closing the admin connection failed")?;
    Ok(())
}

/// Everything outside the system schemas that is not an extension's member.
const ADOPT_OBJECTS: &str = r"
DO $adopt$
DECLARE
    owner_name name := current_setting('liquidity.new_owner');
    owner_oid oid := (SELECT oid FROM pg_roles WHERE rolname = current_setting('liquidity.new_owner'));
    statement text;
BEGIN
    FOR statement IN
        WITH user_schema AS (
            SELECT oid, nspname, nspowner FROM pg_namespace
            WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_%'
        ), member AS (
            SELECT objid FROM pg_depend WHERE deptype = 'e'
        )
        SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, owner_name) FROM user_schema
        WHERE nspowner NOT IN (owner_oid, (SELECT oid FROM pg_roles WHERE rolname = 'pg_database_owner'))
          AND oid NOT IN (SELECT objid FROM member)
        UNION ALL
        SELECT format('ALTER TABLE %s OWNER TO %I', c.oid::regclass, owner_name)
        FROM pg_class c JOIN user_schema s ON s.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relowner <> owner_oid
          AND c.oid NOT IN (SELECT objid FROM member)
          -- a sequence owned by a column follows its table
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT 1 FROM pg_depend d
              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
        UNION ALL
        SELECT format('ALTER %s %s OWNER TO %I', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                      t.oid::regtype, owner_name)
        FROM pg_type t JOIN user_schema s ON s.oid = t.typnamespace
        WHERE (t.typtype IN ('e', 'r', 'd')
               OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
          AND t.typowner <> owner_oid AND t.oid NOT IN (SELECT objid FROM member)
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, owner_name)
        FROM pg_proc p JOIN user_schema s ON s.oid = p.pronamespace
        WHERE p.prokind IN ('f', 'p') AND p.proowner <> owner_oid AND p.oid NOT IN (SELECT objid FROM member)
        UNION ALL
        SELECT format('ALTER PUBLICATION %I OWNER TO %I', pubname, owner_name)
        FROM pg_publication WHERE pubowner <> owner_oid
    LOOP
        EXECUTE statement;
    END LOOP;
END
$adopt$";

/// Renders `template` with the server's `format()` (`%I` identifier, `%L` literal; the
/// arguments are bound, never spliced) and executes the result.
pub(crate) async fn execute_formatted(
    conn: &mut PgConnection,
    template: &str,
    args: &[&str],
) -> Result<(), ProvisionError> {
    let statement: String = sqlx::query_scalar("SELECT format($1, VARIADIC $2::text[])")
        .bind(template)
        .bind(args)
        .fetch_one(&mut *conn)
        .await
        .context("rendering a statement failed")?;
    conn.execute(sqlx::AssertSqlSafe(statement))
        .await
        .with_context(|| format!("{} failed", statement_kind(template)))?;
    Ok(())
}

/// The statement's leading keywords, which never hold configuration values.
fn statement_kind(template: &str) -> &str {
    template.split(" %").next().unwrap_or(template)
}

fn is_sqlstate(error: &ProvisionError, code: &str) -> bool {
    let ProvisionError::Unexpected(e) = error else {
        return false;
    };
    e.chain()
        .filter_map(|cause| cause.downcast_ref::<sqlx::Error>())
        .filter_map(sqlx::Error::as_database_error)
        .any(|db| db.code().as_deref() == Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::parse_tenants_config;

    fn tenants(urls: &[&str]) -> Vec<TenantConfig> {
        let entries: Vec<String> = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                format!(
                    r#"{{"id":"00000000-0000-4000-8000-00000000000{}","name":"t{i}","databaseUrl":"{url}"}}"#,
                    i + 1
                )
            })
            .collect();
        parse_tenants_config(&format!("[{}]", entries.join(","))).unwrap()
    }

    fn catalog() -> PgConnectOptions {
        db::parse_database_url("postgres://cat:pw@h/catalog").unwrap()
    }

    #[test]
    fn each_database_is_owned_by_the_user_of_its_own_url_with_its_password() {
        // Arrange
        let tenants = tenants(&["postgres://t1:p%40ss%2Fw@h/db1", "postgres://t2:x@h/db2"]);

        // Act
        let plan = ProvisionPlan::new(&catalog(), &tenants, Some(RoleLogin::new("cdc", "r"))).unwrap();

        // Assert
        let owners: Vec<(&str, &str, &str, bool)> = plan
            .databases()
            .iter()
            .map(|d| {
                (
                    d.database.as_str(),
                    d.owner.role.as_str(),
                    d.owner.password.as_str(),
                    d.tenant,
                )
            })
            .collect();
        assert_eq!(
            owners,
            [
                ("catalog", "cat", "pw", false),
                ("db1", "t1", "p@ss/w", true),
                ("db2", "t2", "x", true)
            ]
        );
    }

    #[test]
    fn two_tenants_on_one_role_are_refused() {
        let tenants = tenants(&["postgres://same:a@h/db1", "postgres://same:a@h/db2"]);
        let err = ProvisionPlan::new(&catalog(), &tenants, None).unwrap_err();
        assert!(
            matches!(err, ProvisionError::SharedRole { ref role, .. } if role == "same"),
            "{err}"
        );
    }

    #[test]
    fn a_tenant_on_the_catalog_role_is_refused() {
        let tenants = tenants(&["postgres://cat:pw@h/db1"]);
        let err = ProvisionPlan::new(&catalog(), &tenants, None).unwrap_err();
        assert!(matches!(err, ProvisionError::SharedRole { .. }), "{err}");
    }

    #[test]
    fn a_replication_role_that_owns_a_database_is_refused() {
        let tenants = tenants(&["postgres://t1:a@h/db1"]);
        let err = ProvisionPlan::new(&catalog(), &tenants, Some(RoleLogin::new("t1", "b"))).unwrap_err();
        assert!(
            matches!(err, ProvisionError::ReplicationRoleOwnsDatabase { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_url_without_password_or_on_a_server_database_is_refused() {
        let no_password = ProvisionPlan::new(&catalog(), &tenants(&["postgres://t1@h/db1"]), None);
        let reserved = ProvisionPlan::new(&catalog(), &tenants(&["postgres://t1:a@h/postgres"]), None);
        assert!(matches!(no_password, Err(ProvisionError::MissingCredentials { .. })));
        assert!(matches!(reserved, Err(ProvisionError::ReservedDatabase { .. })));
    }

    #[test]
    fn debug_output_of_a_plan_never_shows_a_password() {
        let plan = ProvisionPlan::new(
            &catalog(),
            &tenants(&["postgres://t1:hunter2@h/db1"]),
            Some(RoleLogin::new("cdc", "s3cret")),
        )
        .unwrap();
        let debug = format!("{plan:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cret") && !debug.contains("pw"),
            "{debug}"
        );
    }
}
