//! Which creative a card shows: for each advert and placement, a Thompson-sampling bandit over
//! the card's creatives. Each serve draws, for every creative, a click rate from
//! Beta(clicks + 1, impressions − clicks + 1) and shows the creative with the highest draw: a
//! creative seen little has a wide distribution and still gets chosen now and then (it is
//! explored); one that has shown it is clicked less is chosen less and less. Only billable
//! impressions and clicks count.
//!
//! Counts are kept per instance and, with Redis, added up across instances in one hash per
//! advert (`arms:{advert}`, fields `{placement}:{creative}:i` and `…:c`; the generic card's
//! placement is `-`), pushed and read back in one round trip per sync interval for the adverts
//! this instance served. Without Redis, the same push and read go to the database's
//! `creative_arms` every [`DB_SYNC_EVERY`] (and at shutdown), so a restart learns on from
//! where it stopped.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::Rng;
use rand_distr::{Beta, Distribution};

use crate::domain::AdvertId;
use crate::domain::creative::CreativeId;
use crate::platform::db::Db;
use crate::platform::redis::Redis;

use super::store;

/// Without Redis, how often the counts go to the database: a killed process loses at most
/// this long's counts.
pub const DB_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The position byte of the generic card (as in impression tokens).
pub const GENERIC: u8 = u8::MAX;
const SHARDS: usize = 16;
/// Arms' hashes in Redis outlive their last count by this long.
const ARMS_TTL_SECS: u64 = 30 * 86_400;

/// One creative on one placement of one advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArmKey {
    pub advert: AdvertId,
    /// The placement's position in the catalogue; [`GENERIC`] for the generic card.
    pub placement: u8,
    pub creative: CreativeId,
}

const IMPRESSIONS: usize = 0;
const CLICKS: usize = 1;

#[derive(Debug, Default, Clone, Copy)]
struct Arm {
    /// Every instance's counts as Redis last answered (this instance's pushed ones included).
    shared: [u64; 2],
    /// Counted here and being pushed.
    in_flight: [u64; 2],
    /// Counted here since the last push.
    pending: [u64; 2],
}

impl Arm {
    fn count(&self, i: usize) -> u64 {
        self.shared[i] + self.in_flight[i] + self.pending[i]
    }
}

pub struct Bandit {
    shards: Vec<Mutex<HashMap<ArmKey, Arm>>>,
    redis: Option<Redis>,
    /// Where the counts are kept without Redis.
    db: Option<Db>,
    /// When the counts last went to the database.
    db_synced: Mutex<std::time::Instant>,
    /// The catalogue's placement names, by position (the names are what Redis stores).
    placements: Vec<String>,
}

impl Bandit {
    /// With Redis the counts are shared there; without, in `db` (`None`: in memory only).
    pub fn new(redis: Option<Redis>, db: Option<Db>, placements: Vec<String>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            db: if redis.is_some() { None } else { db },
            redis,
            db_synced: Mutex::new(std::time::Instant::now()),
            placements,
        }
    }

    fn shard(&self, advert: AdvertId) -> std::sync::MutexGuard<'_, HashMap<ArmKey, Arm>> {
        let i = usize::try_from(advert.0.unsigned_abs() % SHARDS as u64).unwrap_or(0);
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The position of `creatives` to show on this advert's placement (0 for a single one).
    pub fn choose<R: Rng>(
        &self,
        advert: AdvertId,
        placement: u8,
        creatives: impl ExactSizeIterator<Item = CreativeId>,
        rng: &mut R,
    ) -> usize {
        if creatives.len() < 2 {
            return 0;
        }
        let counts: Vec<[u64; 2]> = {
            let arms = self.shard(advert);
            creatives
                .map(|creative| {
                    let key = ArmKey {
                        advert,
                        placement,
                        creative,
                    };
                    arms.get(&key)
                        .map_or([0, 0], |a| [a.count(IMPRESSIONS), a.count(CLICKS)])
                })
                .collect()
        };
        let mut best = (0, f64::MIN);
        for (i, [impressions, clicks]) in counts.into_iter().enumerate() {
            let clicks = clicks.min(impressions);
            // Counts are far below 2^52, where f64 stays exact.
            let alpha = clicks as f64 + 1.0;
            let beta = (impressions - clicks) as f64 + 1.0;
            let draw = Beta::new(alpha, beta).map_or(0.0, |b| b.sample(rng));
            if draw > best.1 {
                best = (i, draw);
            }
        }
        best.0
    }

    fn add(&self, key: ArmKey, i: usize) {
        self.shard(key.advert).entry(key).or_default().pending[i] += 1;
    }

    /// A billable impression of a creative chosen among several.
    pub fn impression(&self, key: ArmKey) {
        self.add(key, IMPRESSIONS);
    }

    /// A billable click on a card that showed this creative.
    pub fn click(&self, key: ArmKey) {
        self.add(key, CLICKS);
    }

    /// The counts of one arm, every instance's as last synced plus this one's since.
    #[cfg(test)]
    pub fn counts(&self, key: ArmKey) -> (u64, u64) {
        self.shard(key.advert)
            .get(&key)
            .map_or((0, 0), |a| (a.count(IMPRESSIONS), a.count(CLICKS)))
    }

    fn placement_field(&self, position: u8) -> Option<&str> {
        if position == GENERIC {
            return Some("-");
        }
        self.placements
            .get(usize::from(position))
            .map(String::as_str)
    }

    fn position(&self, field: &str) -> Option<u8> {
        if field == "-" {
            return Some(GENERIC);
        }
        let at = self.placements.iter().position(|p| p == field)?;
        u8::try_from(at).ok().filter(|&p| p != GENERIC)
    }

    /// Pushes this instance's counts to Redis and reads back every instance's, for the adverts
    /// it counted since the last push; `false` if Redis did not answer (the counts are pushed
    /// with the next round). Without Redis, the same with the database, every
    /// [`DB_SYNC_EVERY`] unless `now` (at shutdown).
    pub async fn sync(&self, now: bool) -> bool {
        if self.redis.is_none() {
            if self.db.is_none() {
                return true;
            }
            let mut last = self.db_synced.lock().unwrap_or_else(|p| p.into_inner());
            if !now && last.elapsed() < DB_SYNC_EVERY {
                return true;
            }
            *last = std::time::Instant::now();
        }
        let mut moved: HashMap<AdvertId, Vec<(ArmKey, [u64; 2])>> = HashMap::new();
        for shard in &self.shards {
            let mut arms = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (key, arm) in arms.iter_mut() {
                // An arm whose placement left the catalogue keeps its counts here only.
                if arm.pending != [0, 0] && self.placement_field(key.placement).is_some() {
                    moved
                        .entry(key.advert)
                        .or_default()
                        .push((*key, arm.pending));
                    for i in [IMPRESSIONS, CLICKS] {
                        arm.in_flight[i] += arm.pending[i];
                    }
                    arm.pending = [0, 0];
                }
            }
        }
        if moved.is_empty() {
            return true;
        }
        let adverts: Vec<AdvertId> = moved.keys().copied().collect();
        let answer = match (&self.redis, &self.db) {
            (Some(redis), _) => self.push_to_redis(redis, &moved, &adverts).await,
            (None, Some(db)) => self.push_to_db(db, &moved, &adverts).await,
            (None, None) => Ok(Vec::new()),
        };
        let ok = answer.is_ok();
        match answer {
            Ok(hashes) => {
                for (advert, fields) in adverts.iter().zip(hashes) {
                    self.take_shared(*advert, &fields);
                }
            }
            // Whether the increments were applied is not known (the answer may be what was
            // lost): they are not sent again, so no count is added twice. The learner loses
            // at most one interval's counts, which it can spare.
            Err(e) => tracing::debug!(error = %e, "creative counts push failed"),
        }
        for (advert, arms) in moved {
            let mut shard = self.shard(advert);
            for (key, delta) in arms {
                // Counted: in the shared totals (which `take_shared` read without them), or,
                // if they did not answer, here at least.
                if let Some(arm) = shard.get_mut(&key) {
                    for i in [IMPRESSIONS, CLICKS] {
                        let settled = delta[i].min(arm.in_flight[i]);
                        arm.in_flight[i] -= settled;
                        arm.shared[i] += settled;
                    }
                }
            }
        }
        ok
    }

    /// One pipeline: HINCRBY the new counts, then HGETALL each advert's hash.
    async fn push_to_redis(
        &self,
        redis: &Redis,
        moved: &HashMap<AdvertId, Vec<(ArmKey, [u64; 2])>>,
        adverts: &[AdvertId],
    ) -> Result<Vec<HashMap<String, u64>>, String> {
        let mut pipe = redis::pipe();
        for (advert, arms) in moved {
            let hash = redis.key(&format!("arms:{}", advert.0));
            for (key, delta) in arms {
                let placement = self.placement_field(key.placement).unwrap_or("-");
                for (i, suffix) in [(IMPRESSIONS, "i"), (CLICKS, "c")] {
                    if delta[i] > 0 {
                        pipe.cmd("HINCRBY")
                            .arg(&hash)
                            .arg(format!("{placement}:{}:{suffix}", key.creative))
                            .arg(delta[i])
                            .ignore();
                    }
                }
            }
            pipe.cmd("EXPIRE").arg(&hash).arg(ARMS_TTL_SECS).ignore();
        }
        for advert in adverts {
            pipe.cmd("HGETALL")
                .arg(redis.key(&format!("arms:{}", advert.0)));
        }
        redis
            .with(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
            .map_err(|e| e.to_string())
    }

    /// One transaction: the new counts added to `creative_arms`, then each advert's arms read
    /// back, in the shape Redis answers.
    async fn push_to_db(
        &self,
        db: &Db,
        moved: &HashMap<AdvertId, Vec<(ArmKey, [u64; 2])>>,
        adverts: &[AdvertId],
    ) -> Result<Vec<HashMap<String, u64>>, String> {
        let deltas: Vec<(AdvertId, String, CreativeId, [u64; 2])> = moved
            .values()
            .flatten()
            .map(|(key, delta)| {
                let placement = self.placement_field(key.placement).unwrap_or("-");
                (key.advert, placement.to_owned(), key.creative, *delta)
            })
            .collect();
        let ids = adverts.to_vec();
        let rows = db
            .run(move |conn| {
                let deltas: Vec<store::ArmDelta<'_>> = deltas
                    .iter()
                    .map(|(a, p, c, d)| (*a, p.as_str(), *c, *d))
                    .collect();
                store::add_and_read_arms(conn, &deltas, &ids)
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut by_advert = fields_by_advert(rows);
        Ok(adverts
            .iter()
            .map(|a| by_advert.remove(&a.0).unwrap_or_default())
            .collect())
    }

    /// Without Redis, takes the counts the database kept (at start-up, before serving).
    pub async fn load(&self) -> Result<(), crate::platform::db::DbError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let rows = db.run(store::active_arms).await?;
        for (advert, fields) in fields_by_advert(rows) {
            self.take_shared(AdvertId(advert), &fields);
        }
        Ok(())
    }

    /// Every instance's counts of one advert's arms, as Redis (or the database) answered after
    /// this instance's push.
    fn take_shared(&self, advert: AdvertId, fields: &HashMap<String, u64>) {
        let mut totals: HashMap<ArmKey, [u64; 2]> = HashMap::new();
        for (field, n) in fields {
            let mut parts = field.rsplitn(3, ':');
            let (Some(kind), Some(creative), Some(placement)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let i = match kind {
                "i" => IMPRESSIONS,
                "c" => CLICKS,
                _ => continue,
            };
            let (Some(placement), Ok(creative)) = (self.position(placement), creative.parse())
            else {
                continue;
            };
            let key = ArmKey {
                advert,
                placement,
                creative: CreativeId(creative),
            };
            totals.entry(key).or_default()[i] = *n;
        }
        // Redis's totals hold this instance's pushed counts (in flight until the caller settles
        // them), so they replace what was shared; pending counts stay on top.
        let mut shard = self.shard(advert);
        for (key, total) in totals {
            let arm = shard.entry(key).or_default();
            arm.shared = [
                total[IMPRESSIONS].saturating_sub(arm.in_flight[IMPRESSIONS]),
                total[CLICKS].saturating_sub(arm.in_flight[CLICKS]),
            ];
        }
    }

    /// Forgets an advert's counts on this instance (it left the index).
    pub fn forget(&self, advert: AdvertId) {
        self.shard(advert).retain(|k, _| k.advert != advert);
    }
}

/// Stored arms as Redis's hashes hold them: per advert, `{placement}:{creative}:i|c`.
fn fields_by_advert(rows: Vec<store::ArmRow>) -> HashMap<i64, HashMap<String, u64>> {
    let mut by_advert: HashMap<i64, HashMap<String, u64>> = HashMap::new();
    for (advert, placement, creative, impressions, clicks) in rows {
        let fields = by_advert.entry(advert).or_default();
        let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
        fields.insert(format!("{placement}:{creative}:i"), unsigned(impressions));
        fields.insert(format!("{placement}:{creative}:c"), unsigned(clicks));
    }
    by_advert
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn key(creative: u32) -> ArmKey {
        ArmKey {
            advert: AdvertId(7),
            placement: GENERIC,
            creative: CreativeId(creative),
        }
    }

    /// Three titles; users click only the second one's cards (one in ten of them). After a few
    /// hundred impressions the second is served in most of the serves.
    #[test]
    fn traffic_moves_to_the_creative_that_is_clicked() {
        let bandit = Bandit::new(None, None, Vec::new());
        let creatives = [CreativeId(1), CreativeId(2), CreativeId(3)];
        let mut rng = StdRng::seed_from_u64(20261203);
        let mut shown = [0u32; 3];
        for serve in 0..1500 {
            let chosen = bandit.choose(AdvertId(7), GENERIC, creatives.into_iter(), &mut rng);
            let arm = key(creatives[chosen].0);
            bandit.impression(arm);
            if chosen == 1 && rng.random_range(0..10) == 0 {
                bandit.click(arm);
            }
            if serve >= 500 {
                shown[chosen] += 1;
            }
        }
        let share = f64::from(shown[1]) / 1000.0;
        eprintln!("after 500 serves, the clicked title got {share} of the next 1 000: {shown:?}");
        assert!(
            share >= 0.6,
            "the clicked title was shown in {share} of serves: {shown:?}"
        );
        // The others were explored, not starved from the start.
        let (first, _) = bandit.counts(key(1));
        let (third, _) = bandit.counts(key(3));
        assert!(first >= 5 && third >= 5, "{first} {third}");
    }

    #[test]
    fn creatives_without_counts_are_chosen_evenly() {
        let bandit = Bandit::new(None, None, Vec::new());
        let creatives = [CreativeId(1), CreativeId(2)];
        let mut rng = StdRng::seed_from_u64(1);
        let firsts = (0..2000)
            .filter(|_| bandit.choose(AdvertId(7), 0, creatives.into_iter(), &mut rng) == 0)
            .count();
        assert!((850..=1150).contains(&firsts), "{firsts}");
        assert_eq!(
            bandit.choose(AdvertId(7), 0, [CreativeId(4)].into_iter(), &mut rng),
            0
        );
    }

    #[test]
    fn counts_being_pushed_are_neither_lost_nor_counted_twice_when_redis_answers() {
        let bandit = Bandit::new(None, None, Vec::new());
        let arm = key(1);
        for _ in 0..5 {
            bandit.impression(arm);
        }
        bandit.click(arm);
        // What `sync` does before its round trip: this instance's counts go in flight.
        {
            let mut shard = bandit.shard(arm.advert);
            let a = shard.get_mut(&arm).unwrap();
            a.in_flight = a.pending;
            a.pending = [0, 0];
        }
        // Meanwhile one more impression here; Redis answers every instance's totals, ours in.
        bandit.impression(arm);
        let fields = [("-:1:i".to_owned(), 12), ("-:1:c".to_owned(), 3)].into();
        bandit.take_shared(arm.advert, &fields);
        assert_eq!(bandit.counts(arm), (13, 3));
        // Settled: the pushed counts are in the shared totals now.
        {
            let mut shard = bandit.shard(arm.advert);
            let a = shard.get_mut(&arm).unwrap();
            for i in [IMPRESSIONS, CLICKS] {
                a.shared[i] += a.in_flight[i];
                a.in_flight[i] = 0;
            }
        }
        assert_eq!(bandit.counts(arm), (13, 3));
    }

    #[test]
    fn shared_counts_are_read_back_by_placement_name_and_creative() {
        let bandit = Bandit::new(None, None, vec!["leaderboard".into(), "square".into()]);
        let fields: HashMap<String, u64> = [
            ("square:2:i", 40),
            ("square:2:c", 4),
            ("-:1:i", 9),
            ("gone:1:i", 5),
            ("square:x:i", 5),
            ("bad", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        bandit.take_shared(AdvertId(7), &fields);
        let square = ArmKey {
            advert: AdvertId(7),
            placement: 1,
            creative: CreativeId(2),
        };
        assert_eq!(bandit.counts(square), (40, 4));
        assert_eq!(bandit.counts(key(1)), (9, 0));
        bandit.impression(square);
        assert_eq!(bandit.counts(square), (41, 4));
        bandit.forget(AdvertId(7));
        assert_eq!(bandit.counts(square), (0, 0));
    }
}
