//! Live report updates: what feeds the `reportUpdated` subscription.
//!
//! Each tenant database announces visible changes of a report on the
//! [`REPORT_UPDATED_CHANNEL`] (`NOTIFY` from triggers, payload = the report id). This process
//! holds **one** `LISTEN` connection per tenant database it has subscribers in (opened by the
//! first subscription of that tenant, never one per subscription) and fans each notification
//! out to the subscriptions of that report in this process. Any API replica sees every
//! change, whichever process or worker wrote it, because the database tells them all.
//!
//! Notifications are not queued while a listener is disconnected (a database restart), so
//! after every reconnection every watched report is marked changed: its subscribers re-read
//! it, and a change missed in the gap is sent then.
//!
//! The number of subscriptions is bounded per connection and per user ([`SubscriptionLimits`]),
//! so that one client cannot make the process hold unbounded watchers and re-reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use liquidity_core::reports::REPORT_UPDATED_CHANNEL;
use liquidity_core::tenancy::{TenancyError, TenantRegistry};
use liquidity_core::{ReportId, TenantId, UserId};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

/// How many live subscriptions one client may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionLimits {
    /// On one websocket connection.
    pub per_connection: usize,
    /// Of one user, across every connection to this process.
    pub per_user: usize,
}

impl Default for SubscriptionLimits {
    /// 10 per connection, 20 per user: a client watches the few reports it just started; a
    /// user with two tabs open still fits.
    fn default() -> Self {
        Self {
            per_connection: 10,
            per_user: 20,
        }
    }
}

/// Which bound refused a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionLimit {
    /// [`SubscriptionLimits::per_connection`].
    Connection(usize),
    /// [`SubscriptionLimits::per_user`].
    User(usize),
}

/// Longest wait between two attempts to listen again after a database connection was lost.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// Every live subscription of this process: one per-tenant feed and the per-user counts.
pub struct LiveReports {
    registry: Arc<TenantRegistry>,
    limits: SubscriptionLimits,
    /// One slot per registered tenant, filled by its first subscription.
    feeds: BTreeMap<TenantId, OnceCell<Feed>>,
    per_user: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl LiveReports {
    /// No database connection is opened until the first subscription of a tenant.
    pub fn new(registry: Arc<TenantRegistry>, limits: SubscriptionLimits) -> Self {
        let feeds = registry.tenants().map(|tenant| (tenant.id, OnceCell::new())).collect();
        Self {
            registry,
            limits,
            feeds,
            per_user: Arc::default(),
        }
    }

    /// The bounds this process enforces.
    pub fn limits(&self) -> SubscriptionLimits {
        self.limits
    }

    /// Takes one subscription slot of `user` on `connection`; it is given back when the
    /// returned [`Slot`] is dropped (the subscription ends, is stopped, or its socket closes).
    ///
    /// # Errors
    /// The [`SubscriptionLimit`] that is reached.
    pub fn admit(&self, user: UserId, connection: &Arc<ConnectionSubscriptions>) -> Result<Slot, SubscriptionLimit> {
        let per_connection = self.limits.per_connection;
        connection
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < per_connection).then_some(n + 1)
            })
            .map_err(|_| SubscriptionLimit::Connection(per_connection))?;
        let connection_slot = ConnectionSlot(connection.clone());
        let mut users = lock(&self.per_user);
        let count = users.entry(user).or_insert(0);
        if *count >= self.limits.per_user {
            return Err(SubscriptionLimit::User(self.limits.per_user));
        }
        *count += 1;
        Ok(Slot {
            _connection: connection_slot,
            user,
            per_user: self.per_user.clone(),
        })
    }

    /// Starts watching a report of a tenant: the returned [`ReportWatch`] wakes after every
    /// notification about it (and after every reconnection of the tenant's listener). Call
    /// this **before** reading the report, so that no change after the read goes unseen.
    ///
    /// The first call for a tenant opens its listener and returns once `LISTEN` is in place.
    ///
    /// # Errors
    /// The tenant is unknown, or its database cannot be reached for the first `LISTEN`.
    pub async fn watch(&self, tenant: TenantId, report: ReportId) -> Result<ReportWatch, LiveError> {
        let slot = self
            .feeds
            .get(&tenant)
            .ok_or(LiveError::Tenancy(TenancyError::UnknownTenant(tenant)))?;
        let feed = slot.get_or_try_init(|| Feed::start(&self.registry, tenant)).await?;
        Ok(feed.watchers.watch(report))
    }

    /// How many reports this process watches in `tenant`'s database (0 before its feed starts).
    pub fn watched_reports(&self, tenant: TenantId) -> usize {
        self.feeds
            .get(&tenant)
            .and_then(OnceCell::get)
            .map_or(0, |feed| lock(&feed.watchers.reports).len())
    }
}

/// Why a report cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The tenant's pool is unavailable.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// The first `LISTEN` on the tenant's database failed.
    #[error("cannot LISTEN on the tenant database")]
    Listen(#[from] sqlx::Error),
}

/// The subscriptions of one websocket connection, kept as its connection data.
#[derive(Debug, Default)]
pub struct ConnectionSubscriptions(AtomicUsize);

impl ConnectionSubscriptions {
    /// Live subscriptions on this connection.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

struct ConnectionSlot(Arc<ConnectionSubscriptions>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One admitted subscription, counted against its connection and its user until dropped.
pub struct Slot {
    _connection: ConnectionSlot,
    user: UserId,
    per_user: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut users = lock(&self.per_user);
        if let Some(count) = users.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                users.remove(&self.user);
            }
        }
    }
}

/// The listener task of one tenant database and the reports watched in it.
struct Feed {
    watchers: Arc<Watchers>,
    task: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    async fn start(registry: &TenantRegistry, tenant: TenantId) -> Result<Self, LiveError> {
        let pool = registry.pool(tenant).await?.clone();
        let listener = listen(&pool).await?;
        let watchers = Arc::new(Watchers::default());
        let task = tokio::spawn(run_listener(pool, listener, watchers.clone(), tenant));
        tracing::info!(tenant_id = %tenant, channel = REPORT_UPDATED_CHANNEL, "listening for report updates");
        Ok(Self { watchers, task })
    }
}

/// A listener holds one connection of the tenant's pool for as long as it runs.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(REPORT_UPDATED_CHANNEL).await?;
    Ok(listener)
}

/// Forwards notifications to the watchers until the pool closes (the process stops).
async fn run_listener(pool: PgPool, mut listener: PgListener, watchers: Arc<Watchers>, tenant: TenantId) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match notification.payload().parse::<ReportId>() {
                Ok(report) => watchers.changed(report),
                Err(_) => {
                    tracing::warn!(tenant_id = %tenant, payload = notification.payload(), "report update notification without a report id")
                }
            },
            // The connection was lost and sqlx has already reconnected and listens again:
            // whatever was notified in between is lost, so every subscriber re-reads.
            Ok(None) => {
                tracing::warn!(tenant_id = %tenant, "report update listener reconnected: re-reading every watched report");
                watchers.changed_all();
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error.cause_chain = ?e, error.message = %e, "report update listener lost its connection");
                let Some(again) = relisten(&pool, tenant).await else {
                    return;
                };
                listener = again;
                tracing::info!(tenant_id = %tenant, "report update listener listening again: re-reading every watched report");
                watchers.changed_all();
            }
        }
    }
}

/// A new listener once the database answers again, backing off from 250 ms to
/// [`MAX_RECONNECT_BACKOFF`]; `None` when the pool was closed meanwhile.
async fn relisten(pool: &PgPool, tenant: TenantId) -> Option<PgListener> {
    let mut backoff = Duration::from_millis(250);
    loop {
        match listen(pool).await {
            Ok(listener) => return Some(listener),
            Err(sqlx::Error::PoolClosed) => return None,
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error.message = %e, retry_in = ?backoff, "cannot LISTEN for report updates yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
            }
        }
    }
}

/// Report id -> a change counter its subscriptions wait on, and how many of them there are.
#[derive(Default)]
struct Watchers {
    reports: Mutex<HashMap<ReportId, Watched>>,
}

struct Watched {
    changes: watch::Sender<u64>,
    subscriptions: usize,
}

impl Watchers {
    fn watch(self: &Arc<Self>, report: ReportId) -> ReportWatch {
        let mut reports = lock(&self.reports);
        let watched = reports.entry(report).or_insert_with(|| Watched {
            changes: watch::Sender::new(0),
            subscriptions: 0,
        });
        watched.subscriptions += 1;
        ReportWatch {
            changes: watched.changes.subscribe(),
            report,
            watchers: self.clone(),
        }
    }

    /// A watch channel keeps only the latest value: many notifications between two reads of a
    /// subscriber wake it once, and it reads the report's latest state.
    fn changed(&self, report: ReportId) {
        if let Some(watched) = lock(&self.reports).get(&report) {
            watched.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn changed_all(&self) {
        for watched in lock(&self.reports).values() {
            watched.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn release(&self, report: ReportId) {
        let mut reports = lock(&self.reports);
        if let Some(watched) = reports.get_mut(&report) {
            watched.subscriptions -= 1;
            if watched.subscriptions == 0 {
                reports.remove(&report);
            }
        }
    }
}

/// One subscription's view of a report's changes; stops watching when dropped.
pub struct ReportWatch {
    changes: watch::Receiver<u64>,
    report: ReportId,
    watchers: Arc<Watchers>,
}

impl ReportWatch {
    /// Waits for the next change of the report since the last call (or since the watch began).
    pub async fn changed(&mut self) {
        // The sender lives in the map for as long as this watch does, so this never errs.
        let _ = self.changes.changed().await;
    }
}

impl Drop for ReportWatch {
    fn drop(&mut self) {
        self.watchers.release(self.report);
    }
}

/// The maps stay consistent under a panic (every update is one step), so a poisoned lock is
/// still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(limits: SubscriptionLimits) -> LiveReports {
        LiveReports::new(Arc::new(TenantRegistry::new(Vec::new(), Default::default())), limits)
    }

    #[test]
    fn a_connection_holds_at_most_its_bound_and_a_dropped_slot_frees_a_place() {
        // Arrange
        let live = live(SubscriptionLimits {
            per_connection: 2,
            per_user: 10,
        });
        let connection = Arc::new(ConnectionSubscriptions::default());
        let user = UserId::new_random();

        // Act
        let first = live.admit(user, &connection).unwrap();
        let _second = live.admit(user, &connection).unwrap();
        let refused = live.admit(user, &connection).err();
        drop(first);
        let again = live.admit(user, &connection);

        // Assert
        assert_eq!(refused, Some(SubscriptionLimit::Connection(2)));
        assert!(again.is_ok());
        assert_eq!(connection.count(), 2);
    }

    #[test]
    fn a_user_holds_at_most_its_bound_across_connections_and_others_are_not_affected() {
        // Arrange
        let live = live(SubscriptionLimits {
            per_connection: 2,
            per_user: 3,
        });
        let (a, b) = (Arc::default(), Arc::default());
        let (alice, bob) = (UserId::new_random(), UserId::new_random());
        let held: Vec<Slot> = [&a, &a, &b]
            .into_iter()
            .map(|c| live.admit(alice, c).unwrap())
            .collect();

        // Act
        let refused = live.admit(alice, &b).err();
        let bobs = live.admit(bob, &b);

        // Assert: the refusal took no connection place
        assert_eq!(refused, Some(SubscriptionLimit::User(3)));
        assert!(bobs.is_ok());
        assert_eq!(b.count(), 2);
        drop(held);
        assert_eq!(a.count(), 0);
        assert!(lock(&live.per_user).get(&alice).is_none());
    }

    #[tokio::test]
    async fn a_notification_wakes_the_watchers_of_its_report_only_and_the_last_drop_forgets_it() {
        // Arrange
        let watchers = Arc::new(Watchers::default());
        let (report, other) = (ReportId::new_random(), ReportId::new_random());
        let mut first = watchers.watch(report);
        let mut second = watchers.watch(report);
        let mut unrelated = watchers.watch(other);

        // Act
        watchers.changed(report);

        // Assert
        first.changed().await;
        second.changed().await;
        assert!(!unrelated.changes.has_changed().unwrap());
        watchers.changed_all();
        unrelated.changed().await;
        drop((first, second));
        assert_eq!(lock(&watchers.reports).len(), 1);
        drop(unrelated);
        assert!(lock(&watchers.reports).is_empty());
    }
}
