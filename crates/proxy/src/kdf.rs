//! [`Kdf`]: the threads PBKDF2 runs on, away from the session threads.
//!
//! Sessions run on single-threaded worker runtimes (see [`crate::workers`]): a PBKDF2 of a
//! few milliseconds (or, for a backend asking for millions of iterations, seconds) run there
//! stalls every other session on that worker. Key derivations go to a small fixed set of
//! plain threads instead, through a bounded queue; the session awaits the result, so its
//! timeouts keep running. Plain threads rather than `spawn_blocking` because each worker
//! runtime has its own blocking pool: this one bounds the CPU PBKDF2 takes across all of
//! them.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

/// One key derivation (or other CPU-heavy step) to run.
type Job = Box<dyn FnOnce() + Send>;

/// Derivations waiting for a thread, beyond those running: more wait (asynchronously, under
/// their session's timeouts) for room in the queue.
const QUEUE: usize = 64;

/// The most threads given to PBKDF2, so that a burst of logins leaves cores for relaying.
const MAX_THREADS: usize = 2;

/// A handle to the PBKDF2 threads; clones share them. The threads end when the last handle
/// is dropped.
#[derive(Debug, Clone)]
pub struct Kdf {
    jobs: mpsc::Sender<Job>,
}

/// Why a derivation did not run.
#[derive(Debug, thiserror::Error)]
#[error("the key derivation threads have stopped")]
pub struct KdfStopped;

impl Kdf {
    /// Starts the threads: two, or one on a single-core machine.
    pub fn start() -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_threads(cores.clamp(1, MAX_THREADS))
    }

    /// Starts `threads` threads (at least one).
    pub fn with_threads(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("pgbastion-kdf-{index}"))
                .spawn(move || run_jobs(&queue))?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a PBKDF2 thread and waits for its result without blocking the caller's
    /// thread. If the caller stops waiting (a timeout, a closed session) before the work
    /// starts, it is skipped.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, KdfStopped> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            if !reply.is_closed() {
                let _ = reply.send(work());
            }
        });
        self.jobs.send(job).await.map_err(|_| KdfStopped)?;
        result.await.map_err(|_| KdfStopped)
    }
}

/// A thread's loop: take the next job, run it; end when every handle is gone.
fn run_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for a job, never while one runs.
        let next = match queue.lock() {
            Ok(mut queue) => queue.blocking_recv(),
            Err(_) => None,
        };
        let Some(job) = next else { return };
        // A panicking job loses its own reply (its caller sees KdfStopped), not the thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn within<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), work)
            .await
            .expect("timed out")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_on_another_thread_and_its_result_comes_back() {
        let kdf = Kdf::with_threads(1).unwrap();
        let caller = std::thread::current().id();
        let (value, thread) = within(kdf.run(move || (6 * 7, std::thread::current().id())))
            .await
            .unwrap();
        assert_eq!(value, 42);
        assert_ne!(thread, caller);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_caller_thread_keeps_running_tasks_while_slow_work_runs() {
        let kdf = Kdf::with_threads(1).unwrap();
        let slow = kdf.run(|| std::thread::sleep(Duration::from_millis(500)));
        let other = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            std::time::Instant::now()
        };
        let started = std::time::Instant::now();
        let (slow, other_done) = within(async { tokio::join!(slow, other) }).await;
        slow.unwrap();
        assert!(other_done - started < Duration::from_millis(250));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_job_fails_alone_and_the_thread_serves_the_next() {
        let kdf = Kdf::with_threads(1).unwrap();
        let failed = within(kdf.run(|| -> u8 { panic!("boom") })).await;
        assert!(failed.is_err());
        assert_eq!(within(kdf.run(|| 7)).await.unwrap(), 7);
    }
}
