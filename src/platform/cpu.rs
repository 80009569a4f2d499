//! CPU-heavy work (decoding, resizing and encoding images) on threads of its own that run at a
//! lower scheduling priority than the request workers: when both want the cores, the kernel gives
//! them to redirects and serves first, and image work takes what is left. Alone, it still has
//! every core.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// The niceness of the pool's threads (0 is the default, 19 the lowest priority): at 10 a thread
/// gets about a tenth of the share of a default one when they compete for a core.
pub const NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of low-priority threads; cloning shares it.
#[derive(Clone)]
pub struct CpuPool {
    jobs: Sender<Job>,
}

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("the CPU pool has stopped")]
    Stopped,
    #[error("the work panicked")]
    Panicked,
}

impl CpuPool {
    /// One thread per core (at least one).
    pub fn for_this_machine() -> std::io::Result<Self> {
        Self::start(std::thread::available_parallelism().map_or(1, usize::from))
    }

    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("cpu-{i}"))
                .spawn(move || work(&queue))?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on the pool and waits for its result without blocking the async worker.
    pub async fn run<T, F>(&self, work: F) -> Result<T, CpuError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A dropped receiver (the request went away) leaves nobody to tell.
            let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
        });
        self.jobs.send(job).map_err(|_| CpuError::Stopped)?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(CpuError::Panicked),
            Err(_) => Err(CpuError::Stopped),
        }
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // One idle thread waits on the channel while holding the lock; the others wait for it.
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(job) => job(),
            // Every sender is gone: the pool is dropped.
            Err(_) => return,
        }
    }
}

/// Lowers this thread's priority to `NICENESS` unless it is lower already (Linux keeps a niceness
/// per thread). Lowering needs no privilege; where it fails the pool still works, unchanged.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let me = Some(rustix::thread::gettid());
        if getpriority_process(me).is_ok_and(|now| now >= NICENESS) {
            return;
        }
        if let Err(e) = setpriority_process(me, NICENESS) {
            tracing::warn!(error = %e, "cannot lower the priority of an image thread");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_low_priority_thread_and_a_panic_is_an_error() {
        let pool = CpuPool::start(2).unwrap();
        let (name, niceness) = pool
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                let niceness = rustix::process::getpriority_process(None);
                (name, niceness)
            })
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("cpu-")));
        // `None` is the calling thread on Linux: the pool's thread, not the test's.
        assert!(niceness.unwrap() >= NICENESS);
        let sum = pool.run(|| (1..=100u64).sum::<u64>()).await.unwrap();
        assert_eq!(sum, 5050);
        assert!(matches!(
            pool.run(|| panic!("boom")).await,
            Err(CpuError::Panicked)
        ));
        assert_eq!(
            pool.run(|| 7).await.unwrap(),
            7,
            "a panic does not stop the pool"
        );
    }
}
