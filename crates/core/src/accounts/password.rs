//! argon2id password hashing, off the async executor and bounded.
//!
//! Every hash holds [`MEMORY_KIB`] of memory and a thread for ~20 ms. Without a bound, N
//! concurrent logins hold N x 19 MiB and up to 512 blocking threads, and glibc keeps the freed
//! memory afterwards: a spike of ordinary logins could exhaust the process. So:
//! - at most [`HashLimits::concurrency`] hashes run at once, and a caller that cannot get a slot
//!   within [`HashLimits::queue_timeout`] is told [`HashError::Busy`] at once instead of queueing
//!   without bound. The slot is held by the hash itself, so a request that is cut off (timeout,
//!   disconnect) still counts until its hash really ends;
//! - hashes run on that many dedicated, long-lived threads, each with its own argon2 working
//!   memory allocated by its first hash and reused by every hash it runs, until the thread has
//!   hashed nothing for [`HashLimits::release_memory_after`]. Allocating 19 MiB per hash, as
//!   argon2's convenience API does, let the API grow to 779 MiB in the login-flood benchmark
//!   on tokio's blocking pool (glibc keeps a block in the arena of every thread the pool ever
//!   spawned) and still to 410 MiB on two fixed threads (the freed blocks fragment around small
//!   allocations). With reused memory the hashing costs exactly `concurrency` x 19 MiB while
//!   logins come, and nothing once they stop (an API that served a login wave would otherwise
//!   keep 19 MiB per thread for good: 38 of its 59 MiB in the capacity benchmark);
//! - no more callers wait for a slot than the slots can serve within the queue timeout
//!   ([`HASH_TIME`] each): the others are told [`HashError::Busy`] at once, instead of holding a
//!   request in memory for the whole timeout only to be refused at its end;
//! - hashing threads run under `SCHED_IDLE`: the kernel preempts them the moment any normal
//!   thread wakes, so cheap requests (`reportStatus`...) are scheduled at once while every core
//!   hashes, and idle cores still hash at full speed. Nice 10 and nice 19 were not enough: the
//!   scheduler (EEVDF) lets a running thread finish its slice (~3 ms) before a woken one gets
//!   the core, which tripled `reportStatus` p99 during the login-flood benchmark. The price is
//!   that logins get only the CPU nothing else wants: on a core set saturated by other work,
//!   waiting logins are refused with [`HashError::Busy`] (503 + `Retry-After`) rather than
//!   slowing every other request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// OWASP's first recommended argon2id configuration: 19 MiB of memory, 2 passes, 1 lane.
/// About 15-20 ms of CPU per hash on our 2-core machines (see the README's benchmarks).
pub const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// What one hash costs a core here (about 20-25 ms, see the README's benchmarks): sizes the
/// waiting line, [`HashLimits::queue_timeout`] / `HASH_TIME` callers per slot.
pub const HASH_TIME: Duration = Duration::from_millis(25);

/// How many hashes may run at once, and how long a caller waits for a slot.
#[derive(Clone, Copy, Debug)]
pub struct HashLimits {
    /// Hashes running at once (at least 1). Each holds 19 MiB and one blocking thread.
    pub concurrency: usize,
    /// How long a caller waits for a free slot before [`HashError::Busy`].
    pub queue_timeout: Duration,
    /// A hashing thread that ran no hash for this long gives its 19 MiB back (its next hash
    /// allocates them again, ~1 ms).
    pub release_memory_after: Duration,
}

impl Default for HashLimits {
    /// One hash per core (more only adds memory: the work is CPU-bound), 2 s of queueing, memory
    /// given back after a minute without logins.
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            queue_timeout: Duration::from_secs(2),
            release_memory_after: Duration::from_secs(60),
        }
    }
}

/// What hashing or verifying can fail on (never a wrong password: that is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every slot stayed busy for the whole queue timeout: the caller should retry later.
    #[error("password hashing is saturated: no slot within {0:?}")]
    Busy(Duration),
    /// argon2 refused its input, a stored hash is not a PHC string, or the hashing threads are gone.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies passwords with argon2id and a per-user random salt, at most
/// [`HashLimits::concurrency`] at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A hash of a random password with the same parameters, verified when the username does
    /// not exist so that a login costs the same either way.
    dummy_hash: Arc<str>,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    /// Callers waiting for a slot now, and how many may.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    refusals: Arc<Refusals>,
    /// Jobs for the hashing threads; they exit when the last hasher clone is dropped.
    jobs: SyncSender<Job>,
}

/// One hash, with the result channel and the slot it holds; given the thread's working memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

impl PasswordHasher {
    /// A hasher with OWASP parameters and these limits. Computes the dummy hash once (one hash
    /// of CPU time).
    ///
    /// # Errors
    /// If argon2 refuses the parameters, which would be a programming error.
    pub fn new(limits: HashLimits) -> Result<Self, HashError> {
        let params = Params::new(MEMORY_KIB, PASSES, LANES, None).map_err(|e| HashError::Failed(e.to_string()))?;
        let dummy_password = uuid::Uuid::new_v4().to_string();
        let dummy_hash = hash_with(&params, &mut Vec::new(), dummy_password.as_bytes())?;
        let concurrency = limits.concurrency.max(1);
        // Never more jobs than threads: a job is sent only by the holder of a slot.
        let (jobs, queue) = sync_channel::<Job>(concurrency);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..concurrency {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || run_jobs(&queue, limits.release_memory_after))
                .map_err(|e| HashError::Failed(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self {
            params,
            dummy_hash: dummy_hash.into(),
            slots: Arc::new(Semaphore::new(concurrency)),
            queue_timeout: limits.queue_timeout,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: waiting_line(concurrency, limits.queue_timeout),
            refusals: Arc::default(),
            jobs,
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of the password.
    ///
    /// # Errors
    /// [`HashError::Busy`] when no slot frees up in time; hashing failures.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run_bounded(move |memory| hash_with(&params, memory, password.as_bytes()))
            .await
    }

    /// Whether the password matches the stored PHC string. With `None` (no such user) it
    /// verifies against the dummy hash and answers `false`, spending the same time.
    ///
    /// # Errors
    /// [`HashError::Busy`] when no slot frees up in time; a stored hash that is not a valid
    /// PHC string.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, HashError> {
        let known_user = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run_bounded(move |memory| verify_with(memory, password.as_bytes(), &stored))
            .await?;
        Ok(known_user && matches)
    }

    /// Waits up to the queue timeout for a slot, then runs `work` on a hashing thread holding
    /// it, in the caller's span.
    async fn run_bounded<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<R, HashError> + Send + 'static,
    ) -> Result<R, HashError> {
        let permit = self.acquire().await?;
        let span = tracing::Span::current();
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // Moved in: released when the hash ends, even if the caller has gone.
            let _permit: OwnedSemaphorePermit = permit;
            let _ = done.send(span.in_scope(|| work(memory)));
        });
        self.jobs
            .send(job)
            .map_err(|_| HashError::Failed("the hashing threads are gone".into()))?;
        result
            .await
            .map_err(|_| HashError::Failed("a hashing thread died".into()))?
    }

    async fn acquire(&self) -> Result<OwnedSemaphorePermit, HashError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // Counted while waiting, so that the line never outgrows what the slots can serve.
        let waiting = WaitingGuard::join(&self.waiting, self.max_waiting).ok_or_else(|| {
            self.refusals.count(&self.refusals.at_once, self.max_waiting);
            HashError::Busy(self.queue_timeout)
        })?;
        let acquired = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        drop(waiting);
        match acquired {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(HashError::Failed("hash slots closed".into())),
            Err(_elapsed) => {
                self.refusals.count(&self.refusals.after_wait, self.max_waiting);
                Err(HashError::Busy(self.queue_timeout))
            }
        }
    }
}

/// Logins refused because every hash slot was taken, logged at most once per
/// [`REFUSALS_LOGGED_EVERY`] with their counts. A line per refusal would turn a login flood into a
/// log flood: hundreds of formatted, synchronous writes a second on the request threads, which
/// the cheap requests then wait behind. Each refusal is still counted by the API's error metric
/// (`UNAVAILABLE`).
#[derive(Default)]
struct Refusals {
    /// Refused at once: the waiting line was full.
    at_once: AtomicU64,
    /// Refused after waiting the queue timeout for a slot.
    after_wait: AtomicU64,
    /// When the last line was written.
    logged_at: Mutex<Option<Instant>>,
}

/// See [`Refusals`].
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    /// Counts one refusal of `kind` (one of the counters), and writes the line when it is due.
    fn count(&self, kind: &AtomicU64, max_waiting: usize) {
        kind.fetch_add(1, Ordering::Relaxed);
        // Whoever holds the lock is writing the line: the others only count.
        let Ok(mut logged_at) = self.logged_at.try_lock() else {
            return;
        };
        if logged_at.is_some_and(|at| at.elapsed() < REFUSALS_LOGGED_EVERY) {
            return;
        }
        *logged_at = Some(Instant::now());
        // Taken outside the macro, which skips its arguments when the level is filtered out.
        let (at_once, after_waiting) = (
            self.at_once.swap(0, Ordering::Relaxed),
            self.after_wait.swap(0, Ordering::Relaxed),
        );
        tracing::warn!(
            refused_at_once = at_once,
            refused_after_waiting = after_waiting,
            max_waiting,
            "password hashing saturated: logins refused (counts since the last such line)"
        );
    }
}

/// How many callers may wait for `concurrency` slots: as many as they serve within the timeout.
fn waiting_line(concurrency: usize, queue_timeout: Duration) -> usize {
    let per_slot = queue_timeout.as_millis() / HASH_TIME.as_millis().max(1);
    concurrency.saturating_mul(usize::try_from(per_slot).unwrap_or(usize::MAX))
}

/// One place in the waiting line, given back on drop (also when the caller is cancelled).
struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    fn join(waiting: &'a AtomicUsize, max: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(waiting))
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Puts the calling (hashing) thread under `SCHED_IDLE`; a failure only costs latency.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = %e, "cannot lower the priority of a hashing thread");
    }
}

/// The loop of one hashing thread: runs jobs, on its own working memory, until every sender
/// is gone. The memory is allocated by the thread's first hash (an idle API holds none of it)
/// and dropped after `release_memory_after` without a job.
fn run_jobs(queue: &Mutex<Receiver<Job>>, release_memory_after: Duration) {
    lower_priority();
    let mut memory: Vec<Block> = Vec::new();
    loop {
        // The lock is held only while waiting for the next job, never while hashing. The
        // waiting thread gives the lock up at each timeout, so every thread gets to time out
        // and release its memory while no login comes.
        let job = match queue.lock() {
            Ok(queue) => queue.recv_timeout(release_memory_after),
            Err(poisoned) => poisoned.into_inner().recv_timeout(release_memory_after),
        };
        match job {
            Ok(job) => job(&mut memory),
            Err(RecvTimeoutError::Timeout) => release(&mut memory),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Gives a hashing thread's working memory back to the system. Dropping it is not enough: the
/// first 19 MiB block is mapped on its own and unmapped when dropped, but that raises glibc's
/// mmap threshold above 19 MiB, so later blocks come from the thread's malloc arena, which keeps
/// what is freed (it trims only above twice the threshold). `malloc_trim` returns the free pages
/// of every arena.
fn release(memory: &mut Vec<Block>) {
    if memory.capacity() == 0 {
        return;
    }
    *memory = Vec::new();
    // SAFETY: malloc_trim takes no pointer and only gives free pages back to the kernel; it is
    // thread-safe (it locks each arena in turn).
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A PHC string of the password with a fresh random salt, computed in `memory`.
fn hash_with(params: &Params, memory: &mut Vec<Block>, password: &[u8]) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(e.to_string());
    let salt = argon2::password_hash::try_generate_salt().map_err(|e| failed(&e))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = compute(&argon2, params, memory, password, &salt)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether the password matches the stored PHC string, computed in `memory` with the stored
/// algorithm, version and parameters.
fn verify_with(memory: &mut Vec<Block>, password: &[u8], stored: &str) -> Result<bool, HashError> {
    let invalid = |e: &dyn std::fmt::Display| HashError::Failed(format!("stored hash is not a valid PHC string: {e}"));
    let phc = PasswordHash::new(stored).map_err(|e| invalid(&e))?;
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return Err(invalid(&"no salt or hash"));
    };
    let algorithm = Algorithm::try_from(phc.algorithm.as_str()).map_err(|e| invalid(&e))?;
    let version = Version::try_from(phc.version.unwrap_or(Version::V0x13.into())).map_err(|e| invalid(&e))?;
    let params = Params::try_from(&phc).map_err(|e| invalid(&e))?;
    let computed = compute(
        &Argon2::new(algorithm, version, params.clone()),
        &params,
        memory,
        password,
        salt.as_ref(),
    )?;
    // `Output`'s equality is constant-time.
    Ok(computed == *expected)
}

/// argon2 of the password and salt in `memory`, allocated at the thread's first hash and grown
/// only for stored hashes with larger parameters than ours.
fn compute(
    argon2: &Argon2<'_>,
    params: &Params,
    memory: &mut Vec<Block>,
    password: &[u8],
    salt: &[u8],
) -> Result<Output, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(e.to_string());
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    argon2
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .map_err(|e| failed(&e))?;
    Output::new(&out).map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(HashLimits::default()).unwrap()
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_what_was_counted_since() {
        // Arrange
        let refusals = Refusals::default();

        // Act: the first refusal writes the line (and takes the counts); the next ones only count
        refusals.count(&refusals.at_once, 8);
        for _ in 0..99 {
            refusals.count(&refusals.at_once, 8);
        }
        refusals.count(&refusals.after_wait, 8);

        // Assert
        assert_eq!(refusals.at_once.load(Ordering::Relaxed), 99);
        assert_eq!(refusals.after_wait.load(Ordering::Relaxed), 1);
        assert!(refusals.logged_at.lock().unwrap().is_some());
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        // Arrange
        let hasher = hasher();

        // Act
        let hash = hasher.hash("correct-horse".into()).await.unwrap();

        // Assert
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(hasher.verify("correct-horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!hasher.verify("wrong-horse".into(), Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_of_the_argon2_reference_api_still_verify() {
        // Arrange: a hash made by argon2's own allocating API, as stored by earlier releases
        use argon2::password_hash::PasswordHasher as _;
        let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap();
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"correct-horse")
            .unwrap()
            .to_string();

        // Act + Assert
        assert!(
            hasher()
                .verify("correct-horse".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher().verify("wrong-horse".into(), Some(stored)).await.unwrap());
    }

    #[tokio::test]
    async fn the_same_password_gets_a_different_salt_each_time() {
        let hasher = hasher();
        let a = hasher.hash("same-password".into()).await.unwrap();
        let b = hasher.hash("same-password".into()).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies_even_with_the_dummy_password() {
        assert!(!hasher().verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_hashes_than_the_concurrency_run_at_once_and_the_rest_are_refused_quickly() {
        // Arrange: one slot, a short queue, and a slot held by the test itself
        let hasher = PasswordHasher::new(HashLimits {
            concurrency: 1,
            queue_timeout: Duration::from_millis(50),
            ..HashLimits::default()
        })
        .unwrap();
        let held = hasher.slots.clone().acquire_owned().await.unwrap();

        // Act
        let refused = hasher.hash("correct-horse".into()).await;
        drop(held);
        let admitted = hasher.hash("correct-horse".into()).await;

        // Assert
        assert!(matches!(refused, Err(HashError::Busy(_))), "{refused:?}");
        assert!(admitted.is_ok(), "{admitted:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_on_as_many_dedicated_threads_as_slots() {
        // Arrange
        let hasher = PasswordHasher::new(HashLimits {
            concurrency: 2,
            queue_timeout: Duration::from_secs(30),
            ..HashLimits::default()
        })
        .unwrap();

        // Act: twenty hashes at once, each saying which thread ran it
        let threads = futures::future::join_all(
            (0..20).map(|_| hasher.run_bounded(|_| Ok(std::thread::current().name().map(str::to_owned)))),
        )
        .await;

        // Assert
        let mut names: Vec<String> = threads.into_iter().map(|t| t.unwrap().unwrap()).collect();
        names.sort();
        names.dedup();
        assert!(names.iter().all(|n| n.starts_with("argon2-")), "{names:?}");
        assert!(names.len() <= 2, "{names:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_threads_run_under_the_idle_policy() {
        // Arrange
        let hasher = hasher();

        // Act: the hashing thread's scheduling policy, field 41 of /proc/thread-self/stat
        let policy = hasher
            .run_bounded(|_| {
                let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
                let after_name = stat.rsplit_once(')').unwrap().1;
                Ok(after_name.split_whitespace().nth(38).unwrap().parse::<i32>().unwrap())
            })
            .await
            .unwrap();

        // Assert: 5 is SCHED_IDLE (linux/sched.h)
        assert_eq!(policy, 5);
    }

    #[test]
    fn the_waiting_line_holds_what_the_slots_serve_within_the_timeout() {
        assert_eq!(waiting_line(2, Duration::from_secs(2)), 160);
        assert_eq!(waiting_line(1, Duration::from_millis(10)), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_beyond_the_waiting_line_are_refused_at_once() {
        // Arrange: one slot, held by the test; a line of 20 (500 ms / 25 ms), all waiting
        let hasher = PasswordHasher::new(HashLimits {
            concurrency: 1,
            queue_timeout: Duration::from_millis(500),
            ..HashLimits::default()
        })
        .unwrap();
        let held = hasher.slots.clone().acquire_owned().await.unwrap();
        let line: Vec<_> = (0..20)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash("correct-horse".into()).await })
            })
            .collect();
        poll_until(|| hasher.waiting.load(Ordering::Acquire) == 20).await;

        // Act: one more caller
        let refused = hasher.hash("correct-horse".into()).await;

        // Assert: refused while the line still waits, so it did not wait its timeout (the line,
        // which started earlier, would have timed out first); the line drains afterwards
        assert!(matches!(refused, Err(HashError::Busy(_))), "{refused:?}");
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 20);
        drop(held);
        for waiter in line {
            let _ = waiter.await.unwrap();
        }
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_caller_keeps_its_slot_until_its_hash_ends() {
        // Arrange
        let hasher = PasswordHasher::new(HashLimits {
            concurrency: 1,
            queue_timeout: Duration::from_secs(5),
            ..HashLimits::default()
        })
        .unwrap();

        // Act: start a hash, then drop the caller's future as a request timeout would
        let caller = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.hash("correct-horse".into()).await }
        });
        poll_until(|| hasher.slots.available_permits() == 0).await;
        caller.abort();

        // Assert: the slot is still taken (the blocking hash runs on), then comes back
        assert_eq!(hasher.slots.available_permits(), 0);
        poll_until(|| hasher.slots.available_permits() == 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hashing_thread_gives_its_memory_back_once_logins_stop() {
        // Arrange: one hashing thread that releases its memory after 300 ms without a hash
        let hasher = PasswordHasher::new(HashLimits {
            concurrency: 1,
            release_memory_after: Duration::from_millis(300),
            ..HashLimits::default()
        })
        .unwrap();
        let argon2_kib = u64::from(MEMORY_KIB);
        let before = rss_kib();

        // Act: one hash, then nothing
        let stored = hasher.hash("correct-horse".into()).await.unwrap();
        let holding = rss_kib();

        // Assert: the 19 MiB are held after the hash, given back after the idle time, and
        // allocated again by the next hash
        assert!(holding >= before + argon2_kib * 3 / 4, "RSS {before} -> {holding} KiB");
        poll_until(|| rss_kib() + argon2_kib * 3 / 4 <= holding).await;
        assert!(hasher.verify("correct-horse".into(), Some(stored)).await.unwrap());
    }

    /// This process's resident memory (`VmRSS`), in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Polls a condition every millisecond (a hash lasts ~20 ms: `wait_until`'s 50 ms period
    /// could miss it) for at most 5 s.
    async fn poll_until(condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "condition not met within 5 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
