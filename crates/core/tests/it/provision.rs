//! Least privilege: what each role of a provisioned server can and cannot reach.

use liquidity_core::db::{self, TENANT_MIGRATOR};
use liquidity_core::provision::{ProvisionError, ProvisionPlan, RoleLogin, provision};
use liquidity_core::tenancy::parse_tenants_config;
use liquidity_test_support::{TestDatabases, admin_url};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

/// "insufficient_privilege": what PostgreSQL answers a role without CONNECT.
const PERMISSION_DENIED: &str = "42501";

fn options(url: &str) -> PgConnectOptions {
    url.parse().unwrap()
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

async fn admin() -> PgConnection {
    PgConnection::connect(&admin_url()).await.unwrap()
}

/// Asserts that `options` are refused at connect time for lack of CONNECT.
async fn assert_cannot_connect(options: PgConnectOptions, what: &str) {
    let error = options
        .connect()
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: connected"));
    assert_eq!(sqlstate(&error).as_deref(), Some(PERMISSION_DENIED), "{what}: {error}");
    assert!(
        error.to_string().contains("permission denied for database"),
        "{what}: {error}"
    );
}

fn replication_to(dbs: &TestDatabases, database: &str) -> PgConnectOptions {
    options(&dbs.tenants[0].url)
        .username(&dbs.replication.role)
        .password(&dbs.replication.password)
        .database(database)
}

fn plan_of(dbs: &TestDatabases) -> ProvisionPlan {
    ProvisionPlan::new(
        &db::parse_database_url(&dbs.catalog_url()).unwrap(),
        &parse_tenants_config(&dbs.tenants_config(2)).unwrap(),
        Some(RoleLogin::new(&dbs.replication.role, &dbs.replication.password)),
    )
    .unwrap()
}

#[tokio::test]
async fn a_tenant_role_cannot_connect_to_another_tenants_database_nor_to_the_catalog() {
    // Arrange
    let dbs = TestDatabases::create(2, 2).await;
    let t1 = options(&dbs.tenants[0].url);

    // Act + Assert: its own database works, the others refuse it
    let mut own = t1.connect().await.unwrap();
    let owner: String =
        sqlx::query_scalar("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()")
            .fetch_one(&mut own)
            .await
            .unwrap();
    assert_eq!(owner, t1.get_username());
    assert_cannot_connect(t1.clone().database(&dbs.tenants[1].database), "t1's role on t2").await;
    assert_cannot_connect(t1.clone().database(&dbs.catalog), "t1's role on the catalog").await;
}

#[tokio::test]
async fn a_login_role_without_grants_gets_nothing_through_public() {
    // Arrange: an unrelated login role, as any role of another deployment on the server would be
    let dbs = TestDatabases::create(2, 2).await;
    let role = format!("{}_stranger", dbs.catalog.trim_end_matches("_catalog"));
    let mut admin = admin().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            r#"CREATE ROLE "{role}" LOGIN PASSWORD 'stranger'"#
        )))
        .await
        .unwrap();
    let stranger = options(&dbs.catalog_url()).username(&role).password("stranger");

    // Act + Assert
    let mut databases = vec![dbs.catalog.clone()];
    databases.extend(dbs.tenants.iter().map(|t| t.database.clone()));
    for database in &databases {
        assert_cannot_connect(stranger.clone().database(database), database).await;
        let acl: String = sqlx::query_scalar("SELECT datacl::text FROM pg_database WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(
            !acl.contains("{=") && !acl.contains(",="),
            "PUBLIC keeps a privilege on {database}: {acl}"
        );
    }
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"DROP ROLE "{role}""#)))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_replication_role_streams_and_reads_report_contents_but_cannot_write_reports() {
    // Arrange
    let dbs = TestDatabases::create(2, 2).await;

    // Act
    let mut conn = replication_to(&dbs, &dbs.tenants[1].database).connect().await.unwrap();
    let can_replicate: bool = sqlx::query_scalar("SELECT rolreplication FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let read = sqlx::query("SELECT * FROM report_contents").execute(&mut conn).await;
    let heartbeat = conn
        .execute("INSERT INTO cdc_heartbeat (id, ts) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts")
        .await;
    let write_report = conn
        .execute("INSERT INTO report (tenant_id, user_id) VALUES (gen_random_uuid(), gen_random_uuid())")
        .await
        .unwrap_err();
    let write_content = conn
        .execute("UPDATE report_contents SET status = 'failed'")
        .await
        .unwrap_err();

    // Assert
    assert!(can_replicate);
    read.unwrap();
    heartbeat.unwrap();
    assert_eq!(
        sqlstate(&write_report).as_deref(),
        Some(PERMISSION_DENIED),
        "{write_report}"
    );
    assert_eq!(
        sqlstate(&write_content).as_deref(),
        Some(PERMISSION_DENIED),
        "{write_content}"
    );
    assert_cannot_connect(
        replication_to(&dbs, &dbs.catalog),
        "the replication role on the catalog",
    )
    .await;
}

#[tokio::test]
async fn provisioning_twice_changes_nothing_and_keeps_the_data() {
    // Arrange: provisioned and migrated once by TestDatabases, with a report in t1
    let dbs = TestDatabases::create(2, 2).await;
    let mut t1 = dbs.connect(0).await;
    t1.execute("INSERT INTO report (tenant_id, user_id) VALUES (gen_random_uuid(), gen_random_uuid())")
        .await
        .unwrap();
    let acls = || async {
        let mut admin = admin().await;
        let acls: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT datname::text, pg_get_userbyid(datdba)::text, datacl::text FROM pg_database \
             WHERE datname LIKE $1 ORDER BY datname",
        )
        .bind(format!("{}%", dbs.catalog.trim_end_matches("catalog")))
        .fetch_all(&mut admin)
        .await
        .unwrap();
        acls
    };
    let before = acls().await;

    // Act
    provision(&options(&admin_url()), &plan_of(&dbs)).await.unwrap();

    // Assert
    assert_eq!(acls().await, before);
    assert_eq!(before.len(), 3);
    let mut t1 = dbs.connect(0).await;
    let reports: i64 = sqlx::query_scalar("SELECT count(*) FROM report")
        .fetch_one(&mut t1)
        .await
        .unwrap();
    assert_eq!(reports, 1);
    TENANT_MIGRATOR.run(&mut t1).await.unwrap();
}

#[tokio::test]
async fn a_plan_naming_the_superuser_as_an_owner_is_refused_before_anything_is_created() {
    // Arrange: the catalog URL carries the admin's own credentials
    let dbs = TestDatabases::create(1, 2).await;
    let database = format!("{}_superuser_owned", dbs.catalog);
    let admin_options = options(&admin_url());
    let plan = ProvisionPlan::new(
        &admin_options.clone().database(&database),
        &parse_tenants_config(&dbs.tenants_config(2)).unwrap(),
        None,
    )
    .unwrap();

    // Act
    let error = provision(&admin_options, &plan).await.unwrap_err();

    // Assert
    assert!(
        matches!(error, ProvisionError::PrivilegedRole { ref role } if role == admin_options.get_username()),
        "{error}"
    );
    let created: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&database)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
    assert!(!created);
}

#[tokio::test]
async fn a_database_created_by_the_superuser_is_handed_to_its_owner_with_everything_in_it() {
    // Arrange: a tenant database migrated by the superuser, as the dev stack did before roles
    let dbs = TestDatabases::create(1, 2).await;
    let legacy = format!("{}_legacy", dbs.catalog);
    let owner = format!("{legacy}_owner");
    let mut admin = admin().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{legacy}""#)))
        .await
        .unwrap();
    let admin_options = options(&admin_url());
    let mut as_admin = admin_options.clone().database(&legacy).connect().await.unwrap();
    TENANT_MIGRATOR.run(&mut as_admin).await.unwrap();
    as_admin.close().await.unwrap();
    let url = format!(
        "postgres://{owner}:legacy-pw@{}:{}/{legacy}",
        admin_options.get_host(),
        admin_options.get_port()
    );
    let tenants = parse_tenants_config(&format!(
        r#"[{{"id":"{}","name":"legacy","databaseUrl":"{url}"}}]"#,
        uuid::Uuid::new_v4()
    ))
    .unwrap();
    let plan = ProvisionPlan::new(
        &db::parse_database_url(&dbs.catalog_url()).unwrap(),
        &tenants,
        Some(RoleLogin::new(&dbs.replication.role, &dbs.replication.password)),
    )
    .unwrap();

    // Act
    provision(&admin_options, &plan).await.unwrap();

    // Assert: the owner migrates, writes, and grants Debezium its tables
    let mut conn = PgConnection::connect(&url).await.unwrap();
    TENANT_MIGRATOR.run(&mut conn).await.unwrap();
    conn.execute("INSERT INTO report (tenant_id, user_id) VALUES (gen_random_uuid(), gen_random_uuid())")
        .await
        .unwrap();
    db::grant_cdc_access(&mut conn, &dbs.replication.role).await.unwrap();
    conn.close().await.unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"DROP DATABASE "{legacy}" WITH (FORCE)"#)))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"DROP ROLE "{owner}""#)))
        .await
        .unwrap();
}
