//! The pool against an in-memory manager that counts what it is asked and fails on demand.
//! Most tests run on tokio's paused clock: time moves only when every task waits, so a
//! timeout or a lifetime is exact and a test of an hour takes milliseconds.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::*;

/// What the manager saw; shared with the connections so that their drops count.
#[derive(Debug, Default)]
struct Record {
    connects: AtomicUsize,
    resets: AtomicUsize,
    checks: AtomicUsize,
    /// Polite closes ([`Manager::close`]).
    closes: AtomicUsize,
    /// Moves to another worker ([`Manager::rehome`]), failed ones included.
    rehomes: AtomicUsize,
    live: AtomicUsize,
    max_live: AtomicUsize,
}

impl Record {
    fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct TestConn {
    id: usize,
    record: Arc<Record>,
}

impl Drop for TestConn {
    fn drop(&mut self) {
        self.record.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
struct Injected;

#[derive(Debug, Default)]
struct TestManager {
    record: Arc<Record>,
    /// The next this many connects fail.
    failing_connects: AtomicUsize,
    fail_resets: AtomicBool,
    /// Connections cannot move to another worker.
    fail_rehomes: AtomicBool,
    connect_delay: Mutex<Duration>,
    reset_delay: Mutex<Duration>,
    /// Connections whose check fails.
    dead: Mutex<HashSet<usize>>,
}

impl TestManager {
    fn delay(of: &Mutex<Duration>) -> Duration {
        *of.lock().unwrap()
    }
}

impl Manager for TestManager {
    type Conn = TestConn;
    type Error = Injected;

    async fn connect(&self) -> Result<TestConn, Injected> {
        sleep(Self::delay(&self.connect_delay)).await;
        let id = self.record.connects.fetch_add(1, Ordering::SeqCst) + 1;
        let failing = self.failing_connects.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing_connects.store(failing - 1, Ordering::SeqCst);
            return Err(Injected);
        }
        let live = self.record.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.record.max_live.fetch_max(live, Ordering::SeqCst);
        Ok(TestConn {
            id,
            record: self.record.clone(),
        })
    }

    async fn reset(&self, _conn: &mut TestConn) -> Result<(), Injected> {
        sleep(Self::delay(&self.reset_delay)).await;
        self.record.resets.fetch_add(1, Ordering::SeqCst);
        if self.fail_resets.load(Ordering::SeqCst) {
            return Err(Injected);
        }
        Ok(())
    }

    async fn check(&self, conn: &mut TestConn) -> bool {
        self.record.checks.fetch_add(1, Ordering::SeqCst);
        !self.dead.lock().unwrap().contains(&conn.id)
    }

    fn rehome(&self, _conn: &mut TestConn) -> bool {
        self.record.rehomes.fetch_add(1, Ordering::SeqCst);
        !self.fail_rehomes.load(Ordering::SeqCst)
    }

    async fn close(&self, conn: TestConn) {
        self.record.closes.fetch_add(1, Ordering::SeqCst);
        drop(conn);
    }
}

/// Settings with no lifecycle: each test turns on what it is about.
fn settings(size: usize) -> PoolSettings {
    PoolSettings {
        size,
        min_idle: 0,
        max_lifetime: None,
        lifetime_jitter: 0.0,
        idle_timeout: None,
        checkout_timeout: Duration::from_secs(5),
        health_check_after: Duration::from_secs(3600),
        maintenance_interval: Duration::from_secs(1),
    }
}

fn pool(settings: PoolSettings) -> Pool<TestManager> {
    Pool::new(TestManager::default(), settings, PoolCaps::none())
}

fn record(pool: &Pool<TestManager>) -> &Record {
    &pool.manager().record
}

/// Fails a hung test with context (on the paused clock too: time then runs out at once).
async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(24 * 3600), work)
        .await
        .expect("the test hung")
}

async fn checkout(pool: &Pool<TestManager>) -> Lease<TestManager> {
    pool.checkout().await.expect("checkout")
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    within(async {
        let pool = pool(settings(1));
        let held = checkout(&pool).await;
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..6 {
            let (pool, served) = (pool.clone(), served.clone());
            waiters.push(tokio::spawn(async move {
                let lease = checkout(&pool).await;
                served.lock().unwrap().push(n);
                sleep(Duration::from_millis(10)).await;
                lease.release();
            }));
            // Each waiter is in line before the next one arrives.
            sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(pool.stats().waiting, 6);
        held.release();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*served.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(Record::get(&record(&pool).connects), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_checkout_times_out_after_checkout_timeout_or_at_its_deadline_and_takes_nothing() {
    within(async {
        let pool = pool(PoolSettings {
            checkout_timeout: Duration::from_secs(2),
            ..settings(1)
        });
        let held = checkout(&pool).await;
        let started = Instant::now();
        match pool.checkout().await {
            Err(PoolError::Timeout { waited }) => assert_eq!(waited, Duration::from_secs(2)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // A caller that already waited (a pause) gives what is left of its timeout.
        let started = Instant::now();
        let deadline = started + Duration::from_millis(500);
        let until = pool.checkout_until(deadline).await;
        assert!(matches!(until, Err(PoolError::Timeout { .. })), "{until:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        let stats = pool.stats();
        assert_eq!((stats.waiting, stats.timeouts, stats.open), (0, 2, 1));
        // The timed-out waiter left its place in line: the slot goes straight to the next.
        held.release();
        let started = Instant::now();
        let lease = checkout(&pool).await;
        assert_eq!((lease.id, started.elapsed()), (1, Duration::ZERO));
        assert_eq!(Record::get(&record(&pool).connects), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn size_is_never_exceeded_under_100_concurrent_checkouts() {
    within(async {
        let pool = pool(PoolSettings {
            checkout_timeout: Duration::from_secs(60),
            ..settings(5)
        });
        *pool.manager().connect_delay.lock().unwrap() = Duration::from_millis(2);
        let clients = (0..100u64).map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let lease = checkout(&pool).await;
                assert!(pool.stats().open <= 5, "{:?}", pool.stats());
                sleep(Duration::from_millis(1 + n % 4)).await;
                match n % 3 {
                    0 => lease.release(),
                    1 => lease.reset_and_release().await.unwrap(),
                    _ => drop(lease),
                }
            })
        });
        for client in clients.collect::<Vec<_>>() {
            client.await.unwrap();
        }
        let stats = pool.stats();
        assert_eq!(stats.checkouts, 100);
        assert!(Record::get(&record(&pool).max_live) <= 5);
        assert!(stats.open <= 5 && stats.in_use == 0, "{stats:?}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn min_idle_connections_are_kept_open_without_clients() {
    within(async {
        let pool = pool(PoolSettings {
            min_idle: 3,
            idle_timeout: Some(Duration::from_secs(2)),
            ..settings(5)
        });
        sleep(Duration::from_millis(10)).await;
        assert_eq!((pool.stats().idle, pool.stats().open), (3, 3));
        // Two leave with their connections; the next round replaces them.
        drop((checkout(&pool).await, checkout(&pool).await));
        sleep(Duration::from_millis(1500)).await;
        assert_eq!(pool.stats().idle, 3);
        assert_eq!(Record::get(&record(&pool).connects), 5);
        // The idle timeout never takes the pool below min_idle.
        sleep(Duration::from_secs(60)).await;
        assert_eq!(pool.stats().idle, 3);
        assert_eq!(Record::get(&record(&pool).connects), 5);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_jitter_spreads_the_retirement_of_a_cohort() {
    within(async {
        let pool = pool(PoolSettings {
            max_lifetime: Some(Duration::from_secs(100)),
            lifetime_jitter: 0.2,
            ..settings(20)
        });
        let mut cohort = Vec::new();
        for _ in 0..20 {
            cohort.push(checkout(&pool).await);
        }
        assert_eq!(Record::get(&record(&pool).connects), 20);
        cohort.into_iter().for_each(Lease::release);
        let closes = || Record::get(&record(&pool).closes);
        sleep(Duration::from_secs(79)).await;
        assert_eq!(closes(), 0, "none retires before 80 s (100 s - 20 %)");
        sleep(Duration::from_secs(21)).await;
        // Each lifetime is uniform in 80..=120 s: all 20 on one side of 100 s has odds of
        // one in half a million.
        assert!((1..20).contains(&closes()), "{} retired at 100 s", closes());
        sleep(Duration::from_secs(22)).await;
        assert_eq!(closes(), 20, "all have retired by 120 s (and a round)");
        assert_eq!(pool.stats().open, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_never_retires_a_leased_connection() {
    within(async {
        let pool = pool(PoolSettings {
            max_lifetime: Some(Duration::from_secs(10)),
            ..settings(2)
        });
        let lease = checkout(&pool).await;
        sleep(Duration::from_secs(60)).await;
        assert_eq!(Record::get(&record(&pool).closes), 0);
        assert_eq!(Record::get(&record(&pool).live), 1);
        lease.release();
        sleep(Duration::from_millis(1500)).await;
        assert_eq!(Record::get(&record(&pool).closes), 1);
        assert_eq!(checkout(&pool).await.id, 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_past_its_lifetime_is_not_handed_out_before_the_next_round() {
    within(async {
        let pool = pool(PoolSettings {
            max_lifetime: Some(Duration::from_secs(10)),
            maintenance_interval: Duration::from_secs(3600),
            ..settings(2)
        });
        sleep(Duration::from_millis(1)).await;
        checkout(&pool).await.release();
        sleep(Duration::from_secs(11)).await;
        assert_eq!(checkout(&pool).await.id, 2);
        sleep(Duration::from_millis(1)).await;
        assert_eq!(Record::get(&record(&pool).closes), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_idle_connections_down_to_min_idle() {
    within(async {
        let pool = pool(PoolSettings {
            min_idle: 1,
            idle_timeout: Some(Duration::from_secs(10)),
            ..settings(5)
        });
        let mut leases = Vec::new();
        for _ in 0..4 {
            leases.push(checkout(&pool).await);
        }
        leases.into_iter().for_each(Lease::release);
        sleep(Duration::from_secs(5)).await;
        assert_eq!(pool.stats().idle, 4);
        sleep(Duration::from_secs(6)).await;
        assert_eq!(pool.stats().idle, 1);
        assert_eq!(Record::get(&record(&pool).closes), 3);
        sleep(Duration::from_secs(100)).await;
        assert_eq!(pool.stats().idle, 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_reset_connection_is_reused_and_a_failed_reset_closes_it() {
    within(async {
        let pool = pool(settings(2));
        checkout(&pool).await.reset_and_release().await.unwrap();
        let lease = checkout(&pool).await;
        assert_eq!(lease.id, 1, "reset and reused");
        assert_eq!(Record::get(&record(&pool).resets), 1);
        pool.manager().fail_resets.store(true, Ordering::SeqCst);
        assert!(lease.reset_and_release().await.is_err());
        let stats = pool.stats();
        assert_eq!((stats.open, stats.idle), (0, 0), "{stats:?}");
        assert_eq!(checkout(&pool).await.id, 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_not_handed_out_before_its_reset_finished() {
    within(async {
        let pool = pool(settings(1));
        *pool.manager().reset_delay.lock().unwrap() = Duration::from_secs(1);
        let lease = checkout(&pool).await;
        let started = Instant::now();
        let resetting = tokio::spawn(lease.reset_and_release());
        sleep(Duration::from_millis(10)).await;
        let next = checkout(&pool).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!((next.id, Record::get(&record(&pool).resets)), (1, 1));
        resetting.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_lease_closes_its_connection_and_frees_the_slot_for_a_waiter() {
    within(async {
        let pool = pool(settings(1));
        let lease = checkout(&pool).await;
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { checkout(&pool).await.id }
        });
        sleep(Duration::from_millis(10)).await;
        drop(lease);
        assert_eq!(waiter.await.unwrap(), 2, "the waiter got a new connection");
        let record = record(&pool);
        assert_eq!(
            Record::get(&record.closes),
            0,
            "dropped, not closed politely"
        );
        assert_eq!(Record::get(&record.max_live), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_connect_frees_the_slot_for_the_next_waiter() {
    within(async {
        let pool = pool(settings(1));
        *pool.manager().connect_delay.lock().unwrap() = Duration::from_secs(1);
        pool.manager().failing_connects.store(1, Ordering::SeqCst);
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.checkout().await.map(|lease| lease.id) }
        });
        sleep(Duration::from_millis(10)).await;
        let second = checkout(&pool).await;
        assert!(matches!(
            first.await.unwrap(),
            Err(PoolError::Connect(Injected))
        ));
        assert_eq!(second.id, 2);
        let stats = pool.stats();
        assert_eq!(
            (stats.connects, stats.connect_failures, stats.open),
            (2, 1, 1)
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn released_connections_are_reused_most_recent_first() {
    within(async {
        let pool = pool(settings(3));
        let (first, second) = (checkout(&pool).await, checkout(&pool).await);
        first.release();
        second.release();
        assert_eq!(checkout(&pool).await.id, 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn caps_count_connections_across_pools() {
    within(async {
        let caps = Caps::new(2, 0);
        let cap_pool = |database: &str, user: &str| {
            let settings = PoolSettings {
                checkout_timeout: Duration::from_secs(1),
                ..settings(5)
            };
            let caps = caps.for_pool("db.internal:5432", database, user);
            Pool::new(TestManager::default(), settings, caps)
        };
        let (alice, bob) = (cap_pool("app", "alice"), cap_pool("app", "bob"));
        let held = [checkout(&alice).await, checkout(&alice).await];
        let started = Instant::now();
        assert!(matches!(
            bob.checkout().await,
            Err(PoolError::Timeout { .. })
        ));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // Another database of the same backend has its own cap.
        checkout(&cap_pool("other", "bob")).await;
        // Bob waits in line for the cap, and gets it when one of Alice's connections closes.
        let waiter = tokio::spawn({
            let bob = bob.clone();
            async move { bob.checkout().await }
        });
        sleep(Duration::from_millis(500)).await;
        assert_eq!(bob.stats().waiting, 1);
        let [first, _second] = held;
        drop(first);
        let _bobs = waiter.await.unwrap().unwrap();
        assert_eq!(alice.stats().open + bob.stats().open, 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn after_an_error_dead_idle_connections_are_checked_and_replaced() {
    within(async {
        let pool = pool(settings(3));
        let leases = [
            checkout(&pool).await,
            checkout(&pool).await,
            checkout(&pool).await,
        ];
        let [one, two, three] = leases;
        one.release();
        two.release();
        pool.manager().dead.lock().unwrap().extend([1, 2]);
        sleep(Duration::from_millis(1)).await;
        three.discard_after_error();
        let lease = checkout(&pool).await;
        assert_eq!(lease.id, 4, "both idle ones failed their check");
        assert_eq!(Record::get(&record(&pool).checks), 2);
        assert_eq!(pool.stats().open, 1);
        // Idle since after the error and not for long: handed out unchecked.
        sleep(Duration::from_millis(1)).await;
        lease.release();
        assert_eq!(checkout(&pool).await.id, 4);
        assert_eq!(Record::get(&record(&pool).checks), 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_long_idle_connection_is_checked_before_use() {
    within(async {
        let pool = pool(PoolSettings {
            health_check_after: Duration::from_secs(30),
            ..settings(1)
        });
        checkout(&pool).await.release();
        sleep(Duration::from_secs(10)).await;
        checkout(&pool).await.release();
        assert_eq!(Record::get(&record(&pool).checks), 0);
        sleep(Duration::from_secs(31)).await;
        assert_eq!(checkout(&pool).await.id, 1);
        assert_eq!(Record::get(&record(&pool).checks), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_last_pool_handle_stops_maintenance_and_closes_idle_connections() {
    within(async {
        let pool = pool(PoolSettings {
            min_idle: 2,
            ..settings(3)
        });
        sleep(Duration::from_millis(10)).await;
        let record = pool.manager().record.clone();
        let lease = checkout(&pool).await;
        drop(pool.clone());
        sleep(Duration::from_secs(2)).await;
        assert_eq!(
            Record::get(&record.connects),
            3,
            "a clone's drop stops nothing"
        );
        drop(pool);
        sleep(Duration::from_secs(10)).await;
        assert_eq!(Record::get(&record.closes), 2);
        assert_eq!(Record::get(&record.connects), 3, "maintenance stopped");
        // A lease that ends after the pool is gone closes its connection.
        lease.release();
        assert_eq!(Record::get(&record.live), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn stats_count_checkouts_and_their_waits() {
    within(async {
        let pool = pool(settings(1));
        let lease = checkout(&pool).await;
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { checkout(&pool).await.release() }
        });
        sleep(Duration::from_secs(3)).await;
        assert_eq!((pool.stats().waiting, pool.stats().in_use), (1, 1));
        lease.release();
        waiter.await.unwrap();
        let stats = pool.stats();
        assert_eq!(
            stats,
            PoolStats {
                size: 1,
                open: 1,
                idle: 1,
                in_use: 0,
                waiting: 0,
                checkouts: 2,
                wait_time: Duration::from_secs(3),
                timeouts: 0,
                connects: 1,
                connect_failures: 0,
            }
        );
    })
    .await;
}

/// Runs `work` on worker `index` of `workers` and returns what it gives.
async fn on_worker<T: Send + 'static>(
    workers: &crate::workers::Workers,
    index: usize,
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    // Workers::spawn picks the least busy worker, the first of equals: with every worker
    // idle, sessions held on workers 0..index put the work on worker `index`.
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers.live().iter().any(|&live| live > 0) {
        assert!(Instant::now() < deadline, "workers stay busy");
        sleep(Duration::from_millis(5)).await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    for _ in 0..index {
        let mut hold = hold_rx.clone();
        workers.spawn(move || async move {
            let _ = hold.wait_for(|done| *done).await;
        });
    }
    workers.spawn(move || async move {
        let _ = tx.send(work.await);
    });
    let got = rx.await.expect("the worker ran the work");
    let _ = hold_tx.send(true);
    got
}

/// Checks a connection out, and says which worker did and which connection it got.
fn held_by_worker(
    pool: &Pool<TestManager>,
) -> impl Future<Output = ((usize, usize), Lease<TestManager>)> + Send + 'static {
    let pool = pool.clone();
    async move {
        let lease = pool.checkout().await.unwrap();
        let worker = crate::workers::current().unwrap().index;
        ((worker, lease.id), lease)
    }
}

#[tokio::test]
async fn a_checkout_prefers_a_connection_its_own_worker_opened() {
    let workers = crate::workers::Workers::start(2).unwrap();
    let pool = pool(settings(2));
    // Worker 0 opens a connection and keeps it while worker 1 opens another, then worker 1's
    // is given back last: it is the most recently used.
    let first = on_worker(&workers, 0, held_by_worker(&pool)).await;
    let second = on_worker(&workers, 1, held_by_worker(&pool)).await;
    let ids = [first.0, second.0];
    assert_eq!(ids, [(0, 1), (1, 2)]);
    first.1.release();
    second.1.release();
    assert_eq!(pool.stats().idle, 2);

    // Worker 0 takes its own connection back, not the most recently used one.
    let p = pool.clone();
    let id = on_worker(&workers, 0, async move {
        let lease = p.checkout().await.unwrap();
        let id = lease.id;
        lease.release();
        id
    })
    .await;
    assert_eq!(id, 1);
    // With its own busy, a worker takes any idle connection rather than wait or open one.
    let p = pool.clone();
    let ids = on_worker(&workers, 1, async move {
        let own = p.checkout().await.unwrap();
        let other = p.checkout().await.unwrap();
        (own.id, other.id)
    })
    .await;
    assert_eq!(ids, (2, 1));
    assert_eq!(Record::get(&record(&pool).connects), 2);
}

#[tokio::test]
async fn a_connection_taken_on_another_worker_moves_there_once_or_is_closed() {
    let workers = crate::workers::Workers::start(2).unwrap();
    let pool = pool(settings(1));
    let take = |pool: &Pool<TestManager>| {
        let pool = pool.clone();
        async move {
            let lease = pool.checkout().await.unwrap();
            let id = lease.id;
            lease.release();
            id
        }
    };
    let moves = || Record::get(&record(&pool).rehomes);
    assert_eq!(on_worker(&workers, 0, take(&pool)).await, 1);
    assert_eq!(moves(), 0, "used where it was opened");
    assert_eq!(on_worker(&workers, 1, take(&pool)).await, 1);
    assert_eq!(moves(), 1, "moved to the worker that took it");
    assert_eq!(on_worker(&workers, 1, take(&pool)).await, 1);
    assert_eq!(moves(), 1, "already there");
    // One that cannot move (its backend closed it while idle) is closed, and a new one
    // opened in its place.
    pool.manager().fail_rehomes.store(true, Ordering::SeqCst);
    assert_eq!(on_worker(&workers, 0, take(&pool)).await, 2);
    assert_eq!(moves(), 2);
    assert_eq!(Record::get(&record(&pool).live), 1);
    assert_eq!(pool.stats().open, 1);
}

#[tokio::test(start_paused = true)]
async fn a_retired_pool_closes_its_idle_connections_and_serves_its_holders_without_min_idle() {
    within(async {
        let pool = pool(PoolSettings {
            min_idle: 2,
            ..settings(4)
        });
        sleep(Duration::from_millis(10)).await;
        let held = checkout(&pool).await;
        assert_eq!(pool.stats().idle, 1);
        pool.retire().await;
        assert_eq!(
            Record::get(&record(&pool).closes),
            1,
            "the idle one closed politely"
        );
        sleep(Duration::from_secs(10)).await;
        assert_eq!(pool.stats().idle, 0, "min_idle is no longer kept");
        let connects = Record::get(&record(&pool).connects);
        // Its holder goes on: the connection comes back and is used again.
        held.release();
        let again = checkout(&pool).await;
        assert_eq!(Record::get(&record(&pool).connects), connects);
        drop(again);
    })
    .await;
}
