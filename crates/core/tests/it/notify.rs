//! The `report_updated` triggers: what they announce, and what they keep quiet.

use liquidity_core::UserId;
use liquidity_core::reports::{self, REPORT_SOURCES, REPORT_UPDATED_CHANNEL};
use sqlx::postgres::PgListener;

use crate::helpers::{OneTenant, one_tenant};

#[tokio::test]
async fn a_poll_notifies_nothing_and_a_completion_and_the_finish_announce_their_report() {
    // Arrange: two reports, and a listener on the tenant's database
    let OneTenant { tenant, pool, _dbs } = one_tenant(4).await;
    let polled = reports::create_report(&pool, tenant, UserId::new_random(), &REPORT_SOURCES)
        .await
        .unwrap();
    let changed = reports::create_report(&pool, tenant, UserId::new_random(), &REPORT_SOURCES[..1])
        .await
        .unwrap();
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(REPORT_UPDATED_CHANNEL).await.unwrap();
    let polled_content = reports::list_contents(&pool, polled).await.unwrap()[0].id;
    let changed_content = reports::list_contents(&pool, changed).await.unwrap()[0].id;

    // Act: a poll of one report, then the completion and the finish of the other
    assert!(reports::touch_content(&pool, polled_content).await.unwrap());
    assert!(reports::complete_content(&pool, changed_content, "{}").await.unwrap());
    assert!(reports::finish_report_if_done(&pool, changed).await.unwrap().is_some());

    // Assert: notifications arrive in commit order, so had the poll notified, it would be
    // first; the payload is the report id alone
    let first = listener.recv().await.unwrap();
    let second = listener.recv().await.unwrap();
    assert_eq!(first.payload(), changed.to_string(), "the poll notified");
    assert_eq!(second.payload(), changed.to_string());
}
