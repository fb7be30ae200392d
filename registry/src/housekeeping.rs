//! The housekeeping runtime: garbage collection, image pruning and cache eviction run on their own threads, at a
//! lower CPU priority than the threads that serve requests. An actix worker is one thread; a sweep over 100,000
//! blobs run inline there (as the admin API's `POST …/gc` did) held up every request queued behind it, and on a
//! small machine a sweep anywhere competed with serving on equal terms. Called by the admin API's `gc` and
//! `prune` handlers and by the background tasks in [`crate::background`].

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// The niceness of housekeeping threads (request threads keep 0): under contention the scheduler gives them about
/// a tenth of a serving thread's share, and all of an idle core.
const NICENESS: i32 = 10;

/// The runtime, started on first use and kept for the life of the process.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("housekeeping")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .expect("the housekeeping runtime starts")
    })
}

/// Lowers the calling thread's CPU priority (on Linux niceness is per thread: the calling thread's id names it).
/// Best effort: where it fails the work runs at the normal priority.
fn lower_priority() {
    let this_thread = Some(rustix::thread::gettid());
    if let Err(e) = rustix::process::setpriority_process(this_thread, NICENESS) {
        tracing::debug!(error = %e, "could not lower a housekeeping thread's priority");
    }
}

/// A spawned task that is aborted when this guard is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` on the housekeeping runtime and waits for it; dropping the returned future cancels the work (for
/// leased background work, which must stop when the lease is lost).
pub async fn run<F>(work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut task = AbortOnDrop(runtime().spawn(work));
    match (&mut task.0).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => unreachable!("a housekeeping task is only cancelled with its caller: {e}"),
    }
}

/// Runs `work` on the housekeeping runtime and waits for it; a caller that goes away (a client that hangs up)
/// leaves the work to finish, so that a sweep asked for through the API is never cut off half-way.
pub async fn run_to_completion<F>(work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtime().spawn(work).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => unreachable!("a housekeeping task is never cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_lowered_threads_and_is_cancelled_with_its_caller() {
        let (name, nice) = run(async {
            let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
            (std::thread::current().name().map(str::to_owned), nice)
        })
        .await;
        assert_eq!(name.as_deref(), Some("housekeeping"));
        assert_eq!(nice, NICENESS);

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let pending = run(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        drop(tokio::time::timeout(std::time::Duration::from_millis(10), pending).await);
        assert!(rx.await.is_err(), "the work was dropped with its caller");
    }
}
