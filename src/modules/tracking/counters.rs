//! Counter deltas: what one redirect or impression adds, aggregated per (advert, hour,
//! placement). The hot buffer is sharded by thread so that concurrent requests almost never wait
//! for each other.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::domain::AdvertId;

pub use crate::domain::{Counts, Metric};

/// The start of the UTC hour containing `unix_secs`.
pub fn hour_bucket(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(3600) * 3600
}

/// A placement's catalogue name (`medium_rectangle`), shared rather than copied on the hot path.
pub type PlacementName = Arc<str>;

/// Whether `name` can be a placement name as the catalogue allows them (snake_case, at most 40
/// bytes), so that stored formats can tell a name from a torn or foreign field.
pub fn is_placement_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// (advert, hour bucket in Unix seconds, placement). `placement` is `None` for the generic card,
/// a link followed without a placement token, and counts recorded before placements were.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub advert: AdvertId,
    pub bucket: i64,
    pub placement: Option<PlacementName>,
}

impl CounterKey {
    pub fn new(advert: AdvertId, bucket: i64, placement: Option<PlacementName>) -> Self {
        Self {
            advert,
            bucket,
            placement,
        }
    }

    /// The key of the generic card.
    pub fn generic(advert: AdvertId, bucket: i64) -> Self {
        Self::new(advert, bucket, None)
    }
}

/// Aggregated deltas, ready to be journaled, pushed or applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub deltas: HashMap<CounterKey, Counts>,
}

impl Batch {
    pub fn add(&mut self, key: CounterKey, metric: Metric, n: u64) {
        self.deltas.entry(key).or_default()[metric] += n;
    }

    /// Every placement's counts added up per (advert, hour): what `advert_stats` holds.
    pub fn totals(&self) -> HashMap<(AdvertId, i64), Counts> {
        let mut totals: HashMap<(AdvertId, i64), Counts> = HashMap::new();
        for (key, counts) in &self.deltas {
            *totals.entry((key.advert, key.bucket)).or_default() += counts;
        }
        totals
    }

    /// The counts of named placements only, per (advert, hour, placement).
    pub fn named(&self) -> impl Iterator<Item = (AdvertId, i64, &PlacementName, &Counts)> {
        self.deltas.iter().filter_map(|(key, counts)| {
            key.placement
                .as_ref()
                .map(|p| (key.advert, key.bucket, p, counts))
        })
    }

    /// Rebuilds a batch from totals per (advert, hour) and the named placements' share of them
    /// (how Redis stores counts): what the named placements do not account for is generic.
    pub fn from_totals_and_named(
        totals: HashMap<(AdvertId, i64), Counts>,
        named: HashMap<CounterKey, Counts>,
    ) -> Self {
        let mut rest = totals;
        let mut batch = Batch::default();
        for (key, counts) in named {
            if let Some(total) = rest.get_mut(&(key.advert, key.bucket)) {
                // A split never claims more than its total (a total lost by hand, say).
                let mut kept = Counts::default();
                for metric in Metric::ALL {
                    kept[metric] = counts[metric].min(total[metric]);
                    total[metric] -= kept[metric];
                }
                if !kept.is_zero() {
                    batch.deltas.insert(key, kept);
                }
            }
        }
        for ((advert, bucket), counts) in rest {
            if !counts.is_zero() {
                batch
                    .deltas
                    .insert(CounterKey::generic(advert, bucket), counts);
            }
        }
        batch
    }

    pub fn merge(&mut self, other: Batch) {
        for (key, counts) in other.deltas {
            *self.deltas.entry(key).or_default() += counts;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deltas.values().all(Counts::is_zero)
    }

    /// Sum of one metric over all keys.
    pub fn total(&self, metric: Metric) -> u64 {
        self.deltas.values().map(|c| c[metric]).sum()
    }

    /// All clicks of any kind (what the flush threshold counts).
    pub fn clicks_of_any_kind(&self) -> u64 {
        Metric::ALL
            .into_iter()
            .filter(|m| m.is_click())
            .map(|m| self.total(m))
            .sum()
    }
}

const SHARDS: usize = 16;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// Each thread sticks to one shard, so the runtime's workers rarely share a lock.
fn my_shard() -> usize {
    SHARD.with(|s| {
        let mut shard = s.get();
        if shard == usize::MAX {
            shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(shard);
        }
        shard
    })
}

/// The in-process buffer the hot paths add to.
pub struct CounterBuffer {
    shards: Vec<Mutex<HashMap<CounterKey, Counts>>>,
}

impl Default for CounterBuffer {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl CounterBuffer {
    pub fn add(
        &self,
        advert: AdvertId,
        placement: Option<&PlacementName>,
        metric: Metric,
        unix_secs: i64,
    ) {
        let key = CounterKey::new(advert, hour_bucket(unix_secs), placement.cloned());
        let shard = &self.shards[my_shard()];
        // A poisoned shard still holds valid counts; keep counting.
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default()[metric] += 1;
    }

    /// Takes everything counted so far.
    pub fn drain(&self) -> Batch {
        let mut batch = Batch::default();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            batch.merge(Batch { deltas: taken });
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_buckets_start_on_the_hour() {
        assert_eq!(hour_bucket(7200), 7200);
        assert_eq!(hour_bucket(7199), 3600);
        assert_eq!(hour_bucket(-1), -3600);
    }

    #[test]
    fn concurrent_adds_are_all_drained_exactly_once() {
        let buffer = std::sync::Arc::new(CounterBuffer::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let buffer = buffer.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        let metric = if i % 10 == 0 {
                            Metric::BotClick
                        } else {
                            Metric::Click
                        };
                        buffer.add(AdvertId(t % 3), None, metric, 3600 * (i % 2));
                    }
                })
            })
            .collect();
        let mut drained = Batch::default();
        for _ in 0..5 {
            drained.merge(buffer.drain());
        }
        for t in threads {
            t.join().ok();
        }
        drained.merge(buffer.drain());
        assert_eq!(drained.total(Metric::Click), 72_000);
        assert_eq!(drained.total(Metric::BotClick), 8_000);
        assert_eq!(drained.deltas.len(), 6);
        assert!(buffer.drain().is_empty());
    }

    #[test]
    fn placements_are_counted_apart_and_add_up_to_the_totals() {
        let buffer = CounterBuffer::default();
        let rectangle: PlacementName = Arc::from("medium_rectangle");
        buffer.add(AdvertId(1), Some(&rectangle), Metric::Impression, 10);
        buffer.add(AdvertId(1), Some(&rectangle), Metric::Click, 20);
        buffer.add(AdvertId(1), None, Metric::Impression, 30);
        let batch = buffer.drain();
        assert_eq!(batch.deltas.len(), 2);
        assert_eq!(
            batch.deltas[&CounterKey::new(AdvertId(1), 0, Some(rectangle.clone()))],
            Counts::from_values([1, 0, 0, 1, 0, 0])
        );
        assert_eq!(
            batch.totals()[&(AdvertId(1), 0)],
            Counts::from_values([1, 0, 0, 2, 0, 0])
        );
        assert_eq!(batch.named().count(), 1);
    }

    #[test]
    fn totals_and_named_shares_rebuild_the_batch() {
        let rectangle: PlacementName = Arc::from("medium_rectangle");
        let totals = HashMap::from([
            ((AdvertId(1), 0), Counts::from_values([5, 0, 0, 9, 0, 0])),
            ((AdvertId(2), 0), Counts::from_values([1, 0, 0, 0, 0, 0])),
        ]);
        let named = HashMap::from([
            (
                CounterKey::new(AdvertId(1), 0, Some(rectangle.clone())),
                Counts::from_values([2, 0, 0, 9, 0, 0]),
            ),
            // No total for it: nothing to split.
            (
                CounterKey::new(AdvertId(3), 0, Some(rectangle.clone())),
                Counts::from_values([1, 0, 0, 0, 0, 0]),
            ),
        ]);
        let batch = Batch::from_totals_and_named(totals, named);
        assert_eq!(batch.deltas.len(), 3);
        assert_eq!(
            batch.deltas[&CounterKey::new(AdvertId(1), 0, Some(rectangle))],
            Counts::from_values([2, 0, 0, 9, 0, 0])
        );
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(1), 0)],
            Counts::from_values([3, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(2), 0)],
            Counts::from_values([1, 0, 0, 0, 0, 0])
        );
    }
}
