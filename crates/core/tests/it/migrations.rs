use liquidity_core::db::{CATALOG_MIGRATOR, TENANT_MIGRATOR};
use sqlx::Connection;

use crate::helpers::registry_over;

#[tokio::test]
async fn migrations_run_twice_change_nothing_the_second_time() {
    // Arrange: databases already migrated once by TestDatabases::create
    let (dbs, _registry) = registry_over(1, 2).await;
    let mut catalog = sqlx::PgConnection::connect(&dbs.catalog_url()).await.unwrap();
    let mut tenant = dbs.connect(0).await;

    // Act
    CATALOG_MIGRATOR.run(&mut catalog).await.unwrap();
    TENANT_MIGRATOR.run(&mut tenant).await.unwrap();

    // Assert
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut tenant)
        .await
        .unwrap();
    assert_eq!(applied, i64::try_from(TENANT_MIGRATOR.iter().count()).unwrap());
}

#[tokio::test]
async fn tenant_databases_are_ready_for_debezium() {
    // Arrange
    let (dbs, _registry) = registry_over(1, 2).await;
    let mut tenant = dbs.connect(0).await;

    // Act
    let identity: String =
        sqlx::query_scalar("SELECT relreplident::text FROM pg_class WHERE relname = 'report_contents'")
            .fetch_one(&mut tenant)
            .await
            .unwrap();
    let mut published: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'dbz_report_contents'")
            .fetch_all(&mut tenant)
            .await
            .unwrap();
    published.sort();

    // Assert: UPDATE events carry the whole before-row; only our two tables are decoded
    assert_eq!(identity, "f", "REPLICA IDENTITY FULL");
    assert_eq!(published, ["cdc_heartbeat", "report_contents"]);
}
