//! Counter deltas: what one redirect or impression adds, aggregated per (advert, hour,
//! placement, creative). The hot buffer is sharded by thread so that concurrent requests almost never wait
//! for each other.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::domain::AdvertId;
use crate::domain::creative::CreativeId;
use crate::domain::targeting::{Country, Device, Viewer};

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

/// (advert, hour bucket in Unix seconds, placement, creative). `placement` is `None` for the
/// generic card, a link followed without a placement token, and counts recorded before
/// placements were; `creative` is `None` for a link followed without a token naming one, and
/// counts recorded before creatives were.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub advert: AdvertId,
    pub bucket: i64,
    pub placement: Option<PlacementName>,
    pub creative: Option<CreativeId>,
}

impl CounterKey {
    pub fn new(advert: AdvertId, bucket: i64, placement: Option<PlacementName>) -> Self {
        Self {
            advert,
            bucket,
            placement,
            creative: None,
        }
    }

    pub fn with_creative(mut self, creative: Option<CreativeId>) -> Self {
        self.creative = creative;
        self
    }

    /// The key of the generic card.
    #[cfg(test)]
    pub fn generic(advert: AdvertId, bucket: i64) -> Self {
        Self::new(advert, bucket, None)
    }
}

/// A share of an advert's counts by who was asking: the viewers on one known device, or in one
/// known country. Each kind of group splits the same totals `deltas` hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViewerGroup {
    Device(Device),
    Country(Country),
}

impl ViewerGroup {
    /// How stored formats write it: `@mobile`, `~DE` (no placement name or creative holds
    /// either sign).
    pub fn token(&self) -> String {
        let mut token = String::with_capacity(16);
        self.write_token(&mut token);
        token
    }

    /// Writes [`ViewerGroup::token`] at the end of `out`.
    pub fn write_token(&self, out: &mut String) {
        let (mark, name) = match self {
            Self::Device(d) => ('@', d.as_str()),
            Self::Country(c) => ('~', c.as_str()),
        };
        out.push(mark);
        out.push_str(name);
    }

    pub fn from_token(token: &str) -> Option<Self> {
        if let Some(device) = token.strip_prefix('@') {
            return Device::parse(device).ok().map(Self::Device);
        }
        let code = token.strip_prefix('~')?;
        (code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()))
            .then(|| Country::known(code))
            .flatten()
            .map(Self::Country)
    }

    /// The groups a viewer falls in: its device and its country, each when known.
    fn of(viewer: Viewer) -> impl Iterator<Item = Self> {
        viewer
            .device
            .map(Self::Device)
            .into_iter()
            .chain(viewer.country.map(Self::Country))
    }
}

/// A batch's map. foldhash: every key is the process's own (an advert of a live link, an hour,
/// a catalogue placement, a creative, a device or country), never a value a client chooses,
/// and each click and impression looks up two or three of them.
pub type CountMap<K> = foldhash::HashMap<K, Counts>;

/// Aggregated deltas, ready to be journaled, pushed or applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub deltas: CountMap<CounterKey>,
    /// The shares of known devices and countries, per (advert, hour).
    pub groups: CountMap<(AdvertId, i64, ViewerGroup)>,
}

/// How many keys and group shares a batch holds: the room to make for the next one like it, so
/// that filling it does not grow its maps step by step (each step holds the old map and one twice
/// its size at once, and rehashes every key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSize {
    pub keys: usize,
    pub groups: usize,
}

impl Batch {
    /// An empty batch with room for `size`.
    pub fn with_room(size: BatchSize) -> Self {
        Self {
            deltas: CountMap::with_capacity_and_hasher(size.keys, Default::default()),
            groups: CountMap::with_capacity_and_hasher(size.groups, Default::default()),
        }
    }

    pub fn size(&self) -> BatchSize {
        BatchSize {
            keys: self.deltas.len(),
            groups: self.groups.len(),
        }
    }

    /// About how much memory the batch's maps hold: their slots (a key, its counts and a
    /// control byte each, at the maps' capacity, not their length); the placement names are
    /// shared with the catalogue and left out.
    pub fn heap_bytes(&self) -> usize {
        fn slots<K>(map: &CountMap<K>) -> usize {
            map.capacity() * (std::mem::size_of::<(K, Counts)>() + 1)
        }
        slots(&self.deltas) + slots(&self.groups)
    }

    pub fn add(&mut self, key: CounterKey, metric: Metric, n: u64) {
        self.deltas.entry(key).or_default()[metric] += n;
    }

    /// Adds every count of `counts` to `key`'s, with one look-up.
    pub fn add_counts(&mut self, key: CounterKey, counts: &Counts) {
        *self.deltas.entry(key).or_default() += counts;
    }

    pub fn add_group(
        &mut self,
        advert: AdvertId,
        bucket: i64,
        group: ViewerGroup,
        counts: &Counts,
    ) {
        *self.groups.entry((advert, bucket, group)).or_default() += counts;
    }

    /// Every placement's counts added up per (advert, hour): what `advert_stats` holds.
    pub fn totals(&self) -> HashMap<(AdvertId, i64), Counts> {
        let mut totals: HashMap<(AdvertId, i64), Counts> = HashMap::new();
        for (key, counts) in &self.deltas {
            *totals.entry((key.advert, key.bucket)).or_default() += counts;
        }
        totals
    }

    /// The counts of named placements only, per (advert, hour, placement), every creative's
    /// added up.
    pub fn named(&self) -> HashMap<(AdvertId, i64, &PlacementName), Counts> {
        let mut named: HashMap<(AdvertId, i64, &PlacementName), Counts> = HashMap::new();
        for (key, counts) in &self.deltas {
            if let Some(p) = &key.placement {
                *named.entry((key.advert, key.bucket, p)).or_default() += counts;
            }
        }
        named
    }

    /// The counts of known creatives only, per (advert, hour, creative), every placement's
    /// added up.
    pub fn creatives(&self) -> HashMap<(AdvertId, i64, CreativeId), Counts> {
        let mut shares: HashMap<(AdvertId, i64, CreativeId), Counts> = HashMap::new();
        for (key, counts) in &self.deltas {
            if let Some(c) = key.creative {
                *shares.entry((key.advert, key.bucket, c)).or_default() += counts;
            }
        }
        shares
    }

    /// Adds one advert's hour as the shared tier holds it ([`HourShares`]). Each kind of share
    /// is cut to fit in the total (a share never claims more than its total: a total lost by
    /// hand, say), in the order given, groups in theirs. What the named placements do not
    /// account for is the generic card's, what the creatives do not, no creative's. The two
    /// splits are joined by filling each placement's share from the creatives' in turn: any
    /// joining gives the same totals, placement shares and creative shares, which is all that
    /// is stored.
    pub fn add_hour(&mut self, advert: AdvertId, bucket: i64, hour: HourShares) {
        let HourShares {
            total,
            placements,
            creatives,
            mut groups,
        } = hour;
        if placements.is_empty() && creatives.is_empty() && groups.is_empty() {
            // The generic card's, no creative's: what most hours hold.
            if !total.is_zero() {
                self.add_counts(CounterKey::new(advert, bucket, None), &total);
            }
            return;
        }
        let rows = within(total, placements);
        let mut columns = within(total, creatives);
        for (placement, mut row) in rows {
            for (creative, column) in &mut columns {
                let mut cell = Counts::default();
                for metric in Metric::ALL {
                    cell[metric] = row[metric].min(column[metric]);
                    row[metric] -= cell[metric];
                    column[metric] -= cell[metric];
                }
                if !cell.is_zero() {
                    let key =
                        CounterKey::new(advert, bucket, placement.clone()).with_creative(*creative);
                    self.add_counts(key, &cell);
                }
            }
        }
        groups.sort_unstable_by_key(|(group, _)| *group);
        let (mut devices, mut countries) = (total, total);
        for (group, counts) in groups {
            let left = match group {
                ViewerGroup::Device(_) => &mut devices,
                ViewerGroup::Country(_) => &mut countries,
            };
            let kept = cut(counts, left);
            if !kept.is_zero() {
                self.add_group(advert, bucket, group, &kept);
            }
        }
    }

    pub fn merge(&mut self, other: Batch) {
        if self.deltas.is_empty() && self.groups.is_empty() {
            *self = other;
            return;
        }
        for (key, counts) in other.deltas {
            self.add_counts(key, &counts);
        }
        for (key, counts) in other.groups {
            *self.groups.entry(key).or_default() += counts;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deltas.values().all(Counts::is_zero) && self.groups.values().all(Counts::is_zero)
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

/// One advert's hour as the shared tier holds it: the total over every placement, creative and
/// viewer, and the shares of it that named placements, known creatives, and known devices and
/// countries had.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourShares {
    pub total: Counts,
    pub placements: Vec<(PlacementName, Counts)>,
    pub creatives: Vec<(CreativeId, Counts)>,
    pub groups: Vec<(ViewerGroup, Counts)>,
}

/// `counts` cut to fit in what is `left` of a total, which it then takes from.
fn cut(counts: Counts, left: &mut Counts) -> Counts {
    let mut kept = Counts::default();
    for metric in Metric::ALL {
        kept[metric] = counts[metric].min(left[metric]);
        left[metric] -= kept[metric];
    }
    kept
}

/// `shares` cut to fit in `total`, each under its key, followed by what they leave of it, under
/// `None`.
fn within<K>(total: Counts, shares: Vec<(K, Counts)>) -> Vec<(Option<K>, Counts)> {
    let mut rest = total;
    let mut out = Vec::with_capacity(shares.len() + 1);
    for (key, counts) in shares {
        let kept = cut(counts, &mut rest);
        out.push((Some(key), kept));
    }
    out.push((None, rest));
    out
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
    shards: Vec<Mutex<Batch>>,
}

impl Default for CounterBuffer {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Batch::default())).collect(),
        }
    }
}

impl CounterBuffer {
    pub fn add(
        &self,
        advert: AdvertId,
        placement: Option<&PlacementName>,
        creative: Option<CreativeId>,
        viewer: Viewer,
        metric: Metric,
        unix_secs: i64,
    ) {
        let bucket = hour_bucket(unix_secs);
        let key = CounterKey::new(advert, bucket, placement.cloned()).with_creative(creative);
        let shard = &self.shards[my_shard()];
        // A poisoned shard still holds valid counts; keep counting.
        let mut batch = shard.lock().unwrap_or_else(|p| p.into_inner());
        batch.add(key, metric, 1);
        for group in ViewerGroup::of(viewer) {
            batch.groups.entry((advert, bucket, group)).or_default()[metric] += 1;
        }
    }

    /// Takes everything counted so far. Each shard starts again with room for as many keys as
    /// it held: the next interval touches about as many, and the clicks that add them then do
    /// not wait for the maps to grow (a rehash of every key, several times over, per interval).
    pub fn drain(&self) -> Batch {
        let mut batch = Batch::default();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let room = Batch::with_room(shard.size());
            let taken = std::mem::replace(&mut *shard, room);
            drop(shard);
            batch.merge(taken);
        }
        batch
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
                        buffer.add(
                            AdvertId(t % 3),
                            None,
                            None,
                            Viewer::default(),
                            metric,
                            3600 * (i % 2),
                        );
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
    fn a_drained_shard_keeps_room_for_the_keys_it_held() {
        let buffer = CounterBuffer::default();
        let click = |advert| {
            buffer.add(
                AdvertId(advert),
                None,
                None,
                Viewer::default(),
                Metric::Click,
                0,
            )
        };
        (0..500).for_each(click);
        let drained = buffer.drain();
        assert_eq!(drained.total(Metric::Click), 500);
        assert_eq!(drained.deltas.len(), 500);
        let room: usize = buffer
            .shards
            .iter()
            .map(|s| s.lock().map_or(0, |batch| batch.deltas.capacity()))
            .sum();
        assert!(room >= 500, "room for {room} keys after the drain");
        // The next interval counts into that room, and a drain still takes it all.
        (0..500).for_each(click);
        assert_eq!(buffer.drain(), drained);
        assert!(buffer.drain().is_empty());
    }

    #[test]
    fn placements_are_counted_apart_and_add_up_to_the_totals() {
        let buffer = CounterBuffer::default();
        let rectangle: PlacementName = Arc::from("medium_rectangle");
        let second = Some(CreativeId(2));
        buffer.add(
            AdvertId(1),
            Some(&rectangle),
            second,
            Viewer::default(),
            Metric::Impression,
            10,
        );
        buffer.add(
            AdvertId(1),
            Some(&rectangle),
            second,
            Viewer::default(),
            Metric::Click,
            20,
        );
        buffer.add(
            AdvertId(1),
            Some(&rectangle),
            None,
            Viewer::default(),
            Metric::Impression,
            25,
        );
        buffer.add(
            AdvertId(1),
            None,
            second,
            Viewer::default(),
            Metric::Impression,
            30,
        );
        let batch = buffer.drain();
        assert_eq!(batch.deltas.len(), 3);
        assert_eq!(
            batch.deltas
                [&CounterKey::new(AdvertId(1), 0, Some(rectangle.clone())).with_creative(second)],
            Counts::from_values([1, 0, 0, 1, 0, 0])
        );
        assert_eq!(
            batch.totals()[&(AdvertId(1), 0)],
            Counts::from_values([1, 0, 0, 3, 0, 0])
        );
        let named = batch.named();
        assert_eq!(named.len(), 1);
        assert_eq!(
            named[&(AdvertId(1), 0, &rectangle)],
            Counts::from_values([1, 0, 0, 2, 0, 0])
        );
        let creatives = batch.creatives();
        assert_eq!(creatives.len(), 1);
        assert_eq!(
            creatives[&(AdvertId(1), 0, CreativeId(2))],
            Counts::from_values([1, 0, 0, 2, 0, 0])
        );
    }

    #[test]
    fn an_hour_s_total_and_named_shares_rebuild_its_keys() {
        let rectangle: PlacementName = Arc::from("medium_rectangle");
        let mut batch = Batch::default();
        batch.add_hour(
            AdvertId(1),
            0,
            HourShares {
                total: Counts::from_values([5, 0, 0, 9, 0, 0]),
                placements: vec![(rectangle.clone(), Counts::from_values([2, 0, 0, 9, 0, 0]))],
                ..HourShares::default()
            },
        );
        batch.add_hour(
            AdvertId(2),
            0,
            HourShares {
                total: Counts::from_values([1, 0, 0, 0, 0, 0]),
                ..HourShares::default()
            },
        );
        // No total for it: nothing to split.
        batch.add_hour(
            AdvertId(3),
            0,
            HourShares {
                placements: vec![(rectangle.clone(), Counts::from_values([1, 0, 0, 0, 0, 0]))],
                ..HourShares::default()
            },
        );
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

    /// Whatever way the two splits are joined, the batch has the same totals and the same
    /// shares per placement and per creative as the one pushed.
    #[test]
    fn placement_and_creative_shares_rebuild_a_batch_with_the_same_splits() {
        let (wide, box_): (PlacementName, PlacementName) = (Arc::from("wide"), Arc::from("box"));
        let mut pushed = Batch::default();
        let cells = [
            (Some(&wide), Some(1), 4, 40),
            (Some(&wide), Some(2), 1, 30),
            (Some(&box_), Some(2), 2, 10),
            (None, Some(1), 0, 7),
            (Some(&box_), None, 1, 3),
            (None, None, 2, 5),
        ];
        for (placement, creative, clicks, impressions) in cells {
            let key = CounterKey::new(AdvertId(1), 0, placement.cloned())
                .with_creative(creative.map(CreativeId));
            pushed.add(key.clone(), Metric::Click, clicks);
            pushed.add(key, Metric::Impression, impressions);
        }
        let hour = HourShares {
            total: pushed.totals()[&(AdvertId(1), 0)],
            placements: pushed
                .named()
                .into_iter()
                .map(|((_, _, p), c)| (p.clone(), c))
                .collect(),
            creatives: pushed
                .creatives()
                .into_iter()
                .map(|((_, _, creative), c)| (creative, c))
                .collect(),
            groups: Vec::new(),
        };
        let mut rebuilt = Batch::default();
        rebuilt.add_hour(AdvertId(1), 0, hour);
        assert_eq!(rebuilt.totals(), pushed.totals());
        assert_eq!(rebuilt.named(), pushed.named());
        assert_eq!(rebuilt.creatives(), pushed.creatives());
        // A share larger than its total (edited by hand) is cut to it.
        let mut cut = Batch::default();
        cut.add_hour(
            AdvertId(1),
            0,
            HourShares {
                total: Counts::from_values([1, 0, 0, 0, 0, 0]),
                creatives: vec![(CreativeId(1), Counts::from_values([5, 0, 0, 0, 0, 0]))],
                ..HourShares::default()
            },
        );
        assert_eq!(cut.total(Metric::Click), 1);
        assert_eq!(
            cut.creatives()[&(AdvertId(1), 0, CreativeId(1))],
            Counts::from_values([1, 0, 0, 0, 0, 0])
        );
    }

    #[test]
    fn each_kind_of_group_shares_the_whole_total_and_never_claims_more() {
        use crate::domain::targeting::{Country, Device};
        let de = ViewerGroup::Country(Country::known("DE").unwrap());
        let fr = ViewerGroup::Country(Country::known("FR").unwrap());
        let (mobile, tablet) = (
            ViewerGroup::Device(Device::Mobile),
            ViewerGroup::Device(Device::Tablet),
        );
        let mut batch = Batch::default();
        batch.add_hour(
            AdvertId(1),
            0,
            HourShares {
                total: Counts::from_values([0, 0, 0, 10, 0, 0]),
                // Given out of order: cut in the groups' own order, whatever the order read.
                groups: vec![
                    (tablet, Counts::from_values([0, 0, 0, 8, 0, 0])),
                    (fr, Counts::from_values([0, 0, 0, 6, 0, 0])),
                    (mobile, Counts::from_values([0, 0, 0, 6, 0, 0])),
                    (de, Counts::from_values([0, 0, 0, 5, 0, 0])),
                ],
                ..HourShares::default()
            },
        );
        let group = |g| batch.groups[&(AdvertId(1), 0, g)].impressions;
        assert_eq!((group(mobile), group(tablet)), (6, 4));
        assert_eq!((group(de), group(fr)), (5, 5));
    }
}
