use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use liquidity_core::reports::{self, REPORT_SOURCES};
use liquidity_core::tenancy::TenancyError;
use liquidity_core::{TenantId, UserId};

use crate::helpers::registry_over;

#[tokio::test]
async fn a_report_of_one_tenant_is_written_to_and_read_from_that_tenants_database_only() {
    // Arrange
    let (dbs, registry) = registry_over(2, 5).await;
    let (t1, t2) = (dbs.tenants[0].id, dbs.tenants[1].id);
    let user = UserId::new_random();

    // Act
    let report_id = reports::create_report(registry.pool(t1).await.unwrap(), t1, user, &REPORT_SOURCES)
        .await
        .unwrap();

    // Assert: the row exists in t1's database and nowhere in t2's
    let count = |sql: &'static str| {
        let dbs = &dbs;
        async move {
            let mut t1_conn = dbs.connect(0).await;
            let mut t2_conn = dbs.connect(1).await;
            let a: i64 = sqlx::query_scalar(sql).fetch_one(&mut t1_conn).await.unwrap();
            let b: i64 = sqlx::query_scalar(sql).fetch_one(&mut t2_conn).await.unwrap();
            (a, b)
        }
    };
    assert_eq!(count("SELECT count(*) FROM report").await, (1, 0));
    assert_eq!(count("SELECT count(*) FROM report_contents").await, (3, 0));
    let from_t2 = reports::find_report(registry.pool(t2).await.unwrap(), t2, user, report_id)
        .await
        .unwrap();
    assert!(from_t2.is_none(), "t2's pool must not see t1's report");
    let with_t2_as_tenant = reports::find_report(registry.pool(t1).await.unwrap(), t2, user, report_id)
        .await
        .unwrap();
    assert!(with_t2_as_tenant.is_none(), "a report is scoped by tenant id too");
}

#[tokio::test]
async fn every_tenant_pool_connects_to_its_own_database() {
    // Arrange
    let (dbs, registry) = registry_over(3, 2).await;

    for tenant in &dbs.tenants {
        // Act
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(registry.pool(tenant.id).await.unwrap())
            .await
            .unwrap();

        // Assert
        assert_eq!(name, tenant.database);
    }
}

#[tokio::test]
async fn an_unknown_tenant_is_an_error_and_never_falls_back_to_another_database() {
    // Arrange
    let (_dbs, registry) = registry_over(1, 2).await;
    let stranger = TenantId::new_random();

    // Act
    let result = registry.pool(stranger).await;

    // Assert
    assert!(matches!(result, Err(TenancyError::UnknownTenant(id)) if id == stranger));
    assert_eq!(registry.pools_created(), 0);
}

#[tokio::test]
async fn concurrent_first_use_creates_exactly_one_pool_per_tenant() {
    // Arrange
    let (dbs, registry) = registry_over(3, 4).await;

    // Act: 30 concurrent first requests per tenant
    let tasks: Vec<_> = dbs
        .tenants
        .iter()
        .flat_map(|t| std::iter::repeat_n(t.id, 30))
        .map(|id| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let pool = registry.pool(id).await.unwrap();
                (id, std::ptr::from_ref(pool) as usize)
            })
        })
        .collect();
    let results = futures::future::join_all(tasks).await;

    // Assert: one pool per tenant, and every request of a tenant got that same pool
    assert_eq!(registry.pools_created(), 3);
    for tenant in &dbs.tenants {
        let mut addresses: Vec<usize> = results
            .iter()
            .map(|r| r.as_ref().unwrap())
            .filter(|(id, _)| *id == tenant.id)
            .map(|(_, a)| *a)
            .collect();
        addresses.dedup();
        assert_eq!(addresses.len(), 1, "tenant {} got more than one pool", tenant.name);
    }
}

#[tokio::test]
async fn open_connections_stay_bounded_by_max_connections_under_concurrent_load() {
    // Arrange: a pool of at most 3 connections and 60 concurrent queries of 50 ms each
    const MAX: u32 = 3;
    let (dbs, registry) = registry_over(1, MAX).await;
    let tenant = dbs.tenants[0].clone();
    let pool = registry.pool(tenant.id).await.unwrap().clone();
    let peak = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, url) = (peak.clone(), done.clone(), liquidity_test_support::admin_url());
        let database = tenant.database.clone();
        tokio::spawn(async move {
            let admin = sqlx::PgPool::connect(&url).await.unwrap();
            while !done.load(Ordering::Relaxed) {
                let open: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'liquidity'",
                )
                .bind(&database)
                .fetch_one(&admin)
                .await
                .unwrap();
                peak.fetch_max(open, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Act
    let queries: Vec<_> = (0..60)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { sqlx::query("SELECT pg_sleep(0.05)").execute(&pool).await.map(drop) })
        })
        .collect();
    let results = futures::future::join_all(queries).await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();

    // Assert: every query ran, never on more than MAX connections, and the load did use the pool
    assert!(results.into_iter().all(|r| r.unwrap().is_ok()));
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= i64::from(MAX), "{peak} connections open, max is {MAX}");
    assert!(peak >= 2, "the load should have opened several connections, saw {peak}");
}
