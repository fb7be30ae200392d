//! The housekeeping runtime: garbage collection, image pruning and cache eviction run on their own threads, which
//! take the CPU only when serving does not want it (Linux's `SCHED_IDLE`, and niceness 10 where that is refused).
//! An actix worker is one thread; a sweep over 100,000 blobs run inline there (as the admin API's `POST …/gc` did)
//! held up every request queued behind it, and a sweep on a thread of normal priority took a third of a busy core
//! from serving (bench `--only gc`: manifest GET p99 during sweeps 5–10× the p99 without; `SCHED_IDLE`: 1.0×).
//! The price: on a saturated core a sweep waits for idle time, so a writer that meets its tombstone may wait out
//! `gc::guard::WAIT` and be told to retry (429). Called by the admin API's `gc` and `prune` handlers and by the
//! background tasks in [`crate::background`].

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// The niceness of housekeeping threads (request threads keep 0), which counts where `SCHED_IDLE` is refused.
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
    idle_policy();
}

/// Linux's `SCHED_IDLE` for the calling thread: it runs only when no normal thread wants the CPU.
#[allow(unsafe_code)]
fn idle_policy() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 names the calling thread.
        let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
        if failed {
            tracing::debug!("could not give a housekeeping thread the idle scheduling policy");
        }
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
        let (name, nice, policy) = run(async {
            let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
            // Field 41 of /proc/thread-self/stat: the scheduling policy (5: SCHED_IDLE).
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let after_name = &stat[stat.rfind(')').unwrap() + 1..];
            let policy: u32 = after_name.split_whitespace().nth(41 - 3).unwrap().parse().unwrap();
            (std::thread::current().name().map(str::to_owned), nice, policy)
        })
        .await;
        assert_eq!(name.as_deref(), Some("housekeeping"));
        assert_eq!(nice, NICENESS);
        assert_eq!(policy, libc::SCHED_IDLE as u32, "the idle scheduling policy");

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let pending = run(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        drop(tokio::time::timeout(std::time::Duration::from_millis(10), pending).await);
        assert!(rx.await.is_err(), "the work was dropped with its caller");
    }
}
