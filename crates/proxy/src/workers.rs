//! [`Workers`]: thread-per-core session runtimes.
//!
//! A relayed session is a chain of small reads and writes, each woken by the other side. On
//! tokio's work-stealing runtime every wake-up may also unpark a second worker thread to
//! steal the task, which costs a futex call and a context switch per hop — on a machine
//! already saturated by PostgreSQL and its clients, that is CPU the database does not get.
//! Here each worker thread runs its own single-threaded runtime: a session lives on one
//! thread from accept to close, its wake-ups never cross threads, and new sessions go to
//! the worker with the fewest live ones.
//!
//! State that sessions share is best kept per worker too: [`current`] tells a session which
//! worker it runs on, so that e.g. the pools can give each worker its own share of
//! backend connections (whose sockets then wake the same thread as their clients').

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Work handed to a worker: builds the session's future on the worker's thread (so that
/// sockets register with that worker's reactor).
type Job = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

thread_local! {
    /// This thread's place among the workers: (index, how many there are).
    static CURRENT: Cell<Option<WorkerId>> = const { Cell::new(None) };
}

/// Which worker a thread is, among how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerId {
    /// Its index, from 0.
    pub index: usize,
    /// How many workers there are.
    pub count: usize,
}

/// The worker the calling thread is, or `None` off the worker threads (the accept loops,
/// a library user's own runtime, tests).
pub fn current() -> Option<WorkerId> {
    CURRENT.with(Cell::get)
}

/// The calling thread's worker index: 0 off the worker threads (what per-worker state
/// uses, whose slot 0 then also serves the threads that are not workers).
pub fn index() -> usize {
    current().map_or(0, |worker| worker.index)
}

struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    live: Arc<AtomicUsize>,
}

/// A fixed set of worker threads, each running a single-threaded tokio runtime. Dropping it
/// stops the workers once their queues are empty (sessions still running are cancelled
/// when their runtime shuts down).
pub struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let count = count.max(1);
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
            std::thread::Builder::new()
                .name(format!("pgbastion-worker-{index}"))
                .spawn(move || {
                    CURRENT.with(|current| current.set(Some(WorkerId { index, count })));
                    runtime.block_on(async move {
                        while let Some(job) = queue.recv().await {
                            tokio::spawn(job());
                        }
                    });
                })?;
            workers.push(Worker {
                jobs,
                live: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self { workers })
    }

    /// How many worker threads there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Sessions running on each worker, in order.
    pub fn live(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.live.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs the future `make` builds on the worker with the fewest live sessions. `make` is
    /// called on that worker's thread, inside its runtime.
    pub fn spawn<F, Fut>(&self, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.live.load(Ordering::Relaxed))
        else {
            return;
        };
        let live = LiveGuard::enter(worker.live.clone());
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _live = live;
                make().await;
            })
        });
        // A worker only stops when `Workers` is dropped, so the send cannot fail while
        // `self` exists; if it ever did, the job (and its guard) would just be dropped.
        let _ = worker.jobs.send(job);
    }
}

/// Counts a session as live on its worker from dispatch until its future ends.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn enter(live: Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Self(live)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sessions_go_to_the_least_busy_worker_and_run_on_its_thread() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(current(), None, "the test's own thread is no worker");
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let (names_tx, names) = std::sync::mpsc::channel::<String>();
        for _ in 0..4 {
            let names_tx = names_tx.clone();
            let released = released.clone();
            workers.spawn(move || async move {
                let name = std::thread::current().name().unwrap_or("?").to_owned();
                let id = current().unwrap();
                assert_eq!(name, format!("pgbastion-worker-{}", id.index));
                assert_eq!(id.count, 2);
                names_tx.send(name).unwrap();
                // Hold the session open until the test releases it.
                let _ = tokio::task::spawn_blocking(move || released.lock().unwrap().recv()).await;
            });
        }
        let mut seen: Vec<String> = (0..4)
            .map(|_| names.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                "pgbastion-worker-0",
                "pgbastion-worker-0",
                "pgbastion-worker-1",
                "pgbastion-worker-1"
            ]
        );
        assert_eq!(workers.live(), [2, 2]);
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while workers.live() != [0, 0] {
            assert!(std::time::Instant::now() < deadline, "{:?}", workers.live());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
