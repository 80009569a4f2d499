//! Loads that concurrent misses share. A burst of requests for one cold key is one load of it;
//! a change to a key overtakes the loads under way: what they read is not kept, and a request
//! that misses after the change starts a load of its own instead of joining one that may have
//! read the key before it.
//!
//! The caches of links (tracking) and of cards (serving) load their misses through it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

/// One load of a key; its answer goes to every request that joined it (an error as text, since
/// errors are rarely `Clone`).
pub type Load<T> = Arc<OnceCell<Result<T, String>>>;

/// The loads under way, by key, and a generation that every change moves on.
pub struct SharedLoads<K, T> {
    pending: Mutex<HashMap<K, Load<T>>>,
    generation: AtomicU64,
}

impl<K, T> Default for SharedLoads<K, T> {
    fn default() -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }
}

impl<K: Copy + Eq + Hash, T: Clone> SharedLoads<K, T> {
    fn pending(&self) -> MutexGuard<'_, HashMap<K, Load<T>>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The load under way for `key`, else a new one.
    pub fn share(&self, key: K) -> Load<T> {
        self.pending().entry(key).or_default().clone()
    }

    /// The load under way for `key`; else a new one, if `admit` (asked only then, under the same
    /// lock) allows it. `None`: no load was under way and `admit` refused one.
    pub fn join(&self, key: K, admit: impl FnOnce() -> bool) -> Option<Load<T>> {
        match self.pending().entry(key) {
            Entry::Occupied(under_way) => Some(under_way.get().clone()),
            Entry::Vacant(none) => admit().then(|| none.insert(Load::default()).clone()),
        }
    }

    /// A new load of `key`, unless one is under way (`None`): for work nobody waits for, such as
    /// reading an entry again before it expires.
    pub fn start(&self, key: K) -> Option<Load<T>> {
        match self.pending().entry(key) {
            Entry::Occupied(_) => None,
            Entry::Vacant(none) => Some(none.insert(Load::default()).clone()),
        }
    }

    /// Runs `load` once for everyone who joined it, then forgets it. `load` is given the
    /// generation it starts in: what it read may be kept only while [`Self::is_current`] says so
    /// of it.
    pub async fn run<F, Fut>(&self, key: K, shared: &Load<T>, load: F) -> Result<T, String>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let result = shared
            .get_or_init(|| load(self.generation.load(Ordering::Acquire)))
            .await
            .clone();
        let mut pending = self.pending();
        // A change may have replaced it with a newer load, which stays.
        if pending.get(&key).is_some_and(|l| Arc::ptr_eq(l, shared)) {
            pending.remove(&key);
        }
        result
    }

    /// Whether no change came since `generation` (given to a load when it started).
    pub fn is_current(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Acquire) == generation
    }

    /// A change: every load under way is overtaken, and `keys`' loads are forgotten, so their
    /// next miss loads afresh. Returns the new generation, for a load the change starts itself.
    pub fn overtake(&self, keys: impl IntoIterator<Item = K>) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut pending = self.pending();
        for key in keys {
            pending.remove(&key);
        }
        generation
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_a_change_overtakes_it() {
        let loads = Arc::new(SharedLoads::<u32, u64>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);

        // Eight requests miss key 7 at once: one load runs, all eight get its answer.
        let mut waiting = Vec::new();
        for _ in 0..8 {
            let shared = loads.join(7, || true).expect("admitted");
            let (loads, calls, mut released) = (loads.clone(), calls.clone(), released.clone());
            waiting.push(tokio::spawn(async move {
                loads
                    .run(7, &shared, |generation| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        Ok(generation * 100 + 1)
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Joining needs no admission; starting a second load of the same key is refused.
        assert!(loads.join(7, || false).is_some());
        assert!(loads.start(7).is_none());

        // A change to key 7 while it loads: the load is overtaken, and a miss after the change
        // starts a load of its own instead of joining the old one.
        let generation = loads.overtake([7]);
        assert_eq!(generation, 1);
        assert!(!loads.is_current(0));
        assert!(loads.is_current(1));
        let fresh = loads.start(7).expect("the old load was forgotten");

        release.send(true).expect("loads are waiting");
        for request in waiting {
            assert_eq!(
                request.await.expect("no panic"),
                Ok(1),
                "the old load's answer"
            );
        }
        // The old load's end did not forget the new one.
        assert!(loads.start(7).is_none());
        let answer = loads
            .run(7, &fresh, |g| async move { Ok(g * 100 + 2) })
            .await;
        assert_eq!(answer, Ok(102));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Once over, a load is forgotten: the next miss starts another.
        assert!(loads.start(7).is_some());
    }

    #[tokio::test]
    async fn a_refused_miss_starts_nothing_and_errors_are_shared() {
        let loads = SharedLoads::<u32, u64>::default();
        assert!(loads.join(1, || false).is_none());
        assert!(
            loads.start(1).is_some(),
            "the refusal left nothing under way"
        );

        let shared = loads.join(2, || true).expect("admitted");
        let joined = loads
            .join(2, || unreachable!("joining asks nothing"))
            .expect("joined");
        let first = loads
            .run(2, &shared, |_| async { Err("database down".to_owned()) })
            .await;
        let second = loads.run(2, &joined, |_| async { Ok(5) }).await;
        assert_eq!(first, Err("database down".to_owned()));
        assert_eq!(second, first, "one load, one answer for both");
    }
}
