//! Delivery caps (max impressions, max clicks, daily impressions), judged against the same
//! ledger as reports. An advert is tracked from the moment it is first seen capped, starting from
//! its settled totals (every pending count moved into the database first), and from then on every
//! impression and click counts, capped or not, so a cap cleared and set again, or changed, is
//! judged against the true total.
//!
//! Without Redis one instance sees everything: an impression is admitted only while its totals
//! stay under the caps. With Redis, instances lease blocks of the remaining impression budget
//! from a shared hash (`live:{advert}`) with one script, and serve only what they hold: the sum of
//! delivered impressions and outstanding leases never passes a cap, so instances cannot overshoot
//! together. The hash layout and the rules are described in docs/ARCHITECTURE.md ("Delivery caps").
//!
//! With `even` pacing, an impression cap is judged at each moment against what of it is due by
//! then (the pro-rata line of `super::pacing`), here and as the cap the lease script is given, so
//! instances together serve only what is due ("Pacing" in docs/ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::{self, Script};
use serde::Serialize;

use crate::domain::AdvertId;
use crate::domain::advert::{DeliveryCaps, Pacing};
use crate::domain::targeting::Zone;
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::redis::Redis;

use super::pacing::{Line, Schedule};
use super::store;

const IMPRESSIONS: usize = 0;
const CLICKS: usize = 1;
const TODAY: usize = 2;

/// A lease not renewed for this long is taken back by the next instance that leases.
const LEASE_TTL_MS: i64 = 15_000;
/// An instance stops spending a lease this long before Redis would take it back, so that a lease
/// is never spent after another instance may have been given it again.
const LEASE_MARGIN_MS: i64 = 3_000;
/// The largest block one lease asks for.
const MAX_BLOCK: u64 = 10_000;
/// After a failed lease call on the request path, requests wait this long before trying again.
const LEASE_RETRY_MS: i64 = 1_000;
/// Adverts whose settled totals one query reads.
const TOTALS_PER_QUERY: usize = 500;

/// What serving needs from the ledger before it trusts the database's totals.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Moves every count taken so far (this instance's buffer and journal, and with Redis every
    /// instance's pushed counts) into the database.
    async fn settle(&self) -> Result<(), DbError>;
}

/// Reports what an instance counted and asks for more lease. Returns `{-1}` when the hash is
/// missing (never seeded, or Redis lost it), else `{1, granted, held, impressions, today,
/// clicks}`.
///
/// KEYS[1] the advert's hash. ARGV: 1 instance; 2, 3, 4 its running totals of impressions,
/// impressions today and clicks; 5 today's field; 6, 7, 8 the part of them its last answer
/// included (used when the hash does not know the instance: new, or lost and seeded again);
/// 9 the lease it still holds; 10 wanted; 11 max impressions, 12 max today (-1: none; with
/// even pacing, what of each is due by now, so `room` is what is due and not yet delivered or
/// leased);
/// 13 lease ttl ms; 14 hold after seeding ms; 15 a stale day field or ''.
///
/// Running totals make a call whose answer was lost harmless to repeat: only what the hash has
/// not seen from the instance is added (`u:{instance}` = its last totals and when). Leases of
/// instances that stopped renewing count as delivered: their holder may have spent them before
/// it died, and counting them can only under-deliver, never overshoot.
const LEASE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local inst = ARGV[1]
local day_field = ARGV[5]
local base_imp, base_day, base_clk = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local last = redis.call('HGET', KEYS[1], 'u:' .. inst)
if last then
  local f = {}
  for w in string.gmatch(last, '%S+') do f[#f + 1] = w end
  base_imp = tonumber(f[1])
  base_clk = tonumber(f[4])
  if f[2] == day_field then base_day = tonumber(f[3]) else base_day = 0 end
end
local imp = redis.call('HINCRBY', KEYS[1], 'imp', math.max(0, tonumber(ARGV[2]) - base_imp))
local today = redis.call('HINCRBY', KEYS[1], day_field, math.max(0, tonumber(ARGV[3]) - base_day))
local clk = redis.call('HINCRBY', KEYS[1], 'clk', math.max(0, tonumber(ARGV[4]) - base_clk))
redis.call('HSET', KEYS[1], 'u:' .. inst,
  ARGV[2] .. ' ' .. day_field .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. now)
if ARGV[15] ~= '' then redis.call('HDEL', KEYS[1], ARGV[15]) end
local held = 0
local others = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local f = fields[i]
  local kind = string.sub(f, 1, 2)
  local owner = string.sub(f, 3)
  if kind == 'l:' then
    local n = tonumber(fields[i + 1])
    local expires = tonumber(redis.call('HGET', KEYS[1], 'e:' .. owner) or '0')
    if expires < now then
      imp = redis.call('HINCRBY', KEYS[1], 'imp', n)
      today = redis.call('HINCRBY', KEYS[1], day_field, n)
      redis.call('HDEL', KEYS[1], f, 'e:' .. owner)
    elseif owner == inst then
      held = math.min(n, tonumber(ARGV[9]))
    else
      others = others + n
    end
  elseif kind == 'u:' and owner ~= inst then
    local seen = tonumber(string.match(fields[i + 1], '(%d+)$') or '0')
    if seen < now - 86400000 then redis.call('HDEL', KEYS[1], f) end
  end
end
local granted = 0
local want = tonumber(ARGV[10])
local seeded = tonumber(redis.call('HGET', KEYS[1], 'seeded') or '0')
if want > 0 and now >= seeded + tonumber(ARGV[14]) then
  local room = 1e15
  local max_imp = tonumber(ARGV[11])
  local max_day = tonumber(ARGV[12])
  if max_imp >= 0 then room = math.min(room, max_imp - imp - others - held) end
  if max_day >= 0 then room = math.min(room, max_day - today - others - held) end
  if room > 0 then
    granted = math.min(want, room, math.max(1, math.ceil(room / 4)))
  end
end
held = held + granted
if held > 0 then
  redis.call('HSET', KEYS[1], 'l:' .. inst, held, 'e:' .. inst, now + tonumber(ARGV[13]))
else
  redis.call('HDEL', KEYS[1], 'l:' .. inst, 'e:' .. inst)
end
return {1, granted, held, imp, today, clk}
";

/// Seeds a missing hash from the ledger, or raises totals that fell below it (never lowers them:
/// the ledger can only lag the truth). A hash seeded anew grants nothing for the hold time given
/// to `LEASE_SCRIPT`, so that every instance still spending a lease of the lost hash learns it is
/// void first. Totals read without settling the ledger first only raise (ARGV[5] = 'raise'):
/// they may lack what is still on its way to the database, so they never seed.
/// KEYS[1]; ARGV: 1 impressions, 2 clicks, 3 today's field, 4 today, 5 'seed' or 'raise'.
const SEED_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[5] ~= 'seed' then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'imp', ARGV[1], 'clk', ARGV[2], ARGV[3], ARGV[4], 'seeded', now)
  return 1
end
local function raise(field, n)
  if tonumber(redis.call('HGET', KEYS[1], field) or '0') < tonumber(n) then
    redis.call('HSET', KEYS[1], field, n)
  end
end
raise('imp', ARGV[1])
raise('clk', ARGV[2])
raise(ARGV[3], ARGV[4])
return 0
";

fn limited_impressions(caps: &DeliveryCaps) -> bool {
    caps.max_impressions.is_some() || caps.daily_max_impressions.is_some()
}

#[derive(Debug, Default)]
struct State {
    caps: DeliveryCaps,
    /// The advert's time zone, whose days `TODAY` counts.
    zone: Zone,
    /// The day `TODAY` counts (Unix seconds of its midnight there), and when it ends.
    day: i64,
    day_ends: i64,
    /// Totals known to be stored: the settled ledger at load; with Redis, its last answer.
    shared: [u64; 3],
    /// Counted here since tracking began (`TODAY`: since the day began). Redis is told these
    /// running totals, not increments, so a call whose answer was lost is never added twice.
    counted: [u64; 3],
    /// The part of `counted` that Redis's last answer includes.
    acked: [u64; 3],
    /// With Redis: impressions this instance may still serve, until `lease_until_ms`.
    lease: u64,
    lease_until_ms: i64,
    /// Impressions served since the last lease call (sizes the next block).
    served_recently: u64,
    /// A decision wanted this advert and found no lease.
    starved: bool,
    /// When it is active (targeted days and hours within its flight), for even pacing.
    schedule: Schedule,
    /// Even pacing's lines, drawn when first needed: today's (for the daily cap) and the
    /// flight's (for `max_impressions`).
    daily_line: Option<Line>,
    flight_line: Option<Line>,
}

impl State {
    fn total(&self, i: usize) -> u64 {
        self.shared[i] + self.counted[i].saturating_sub(self.acked[i])
    }

    fn unacked(&self) -> bool {
        self.counted != self.acked
    }

    /// Moves to the day holding `unix_secs`, counting it from zero if it is a new one.
    fn roll_day(&mut self, unix_secs: i64) {
        if unix_secs >= self.day && unix_secs < self.day_ends {
            return;
        }
        let (day, ends) = self.zone.day(unix_secs);
        self.day_ends = ends;
        if self.day != day {
            self.day = day;
            self.daily_line = None;
            self.shared[TODAY] = 0;
            self.counted[TODAY] = 0;
            self.acked[TODAY] = 0;
        }
    }

    fn lease_valid(&self, now_ms: i64) -> bool {
        self.lease > 0 && now_ms < self.lease_until_ms
    }

    /// A new schedule draws its lines again.
    fn set_schedule(&mut self, schedule: Schedule) {
        if self.schedule != schedule {
            self.schedule = schedule;
            self.daily_line = None;
            self.flight_line = None;
        }
    }

    /// The caps as they stand at `unix_secs` (of the day `roll_day` moved to): with even
    /// pacing, the daily cap is what of it is due by then on today's line (today's active time
    /// within the flight), and `max_impressions`, when the flight has a start and an end, what of
    /// it is due on the flight's line.
    fn caps_at(&mut self, unix_secs: i64) -> DeliveryCaps {
        let mut caps = self.caps;
        if caps.pacing != Pacing::Even {
            return caps;
        }
        let active = self.schedule.active;
        // The line kept in `slot` when it is still the one over `period`, else a new one.
        let allowance = |slot: &mut Option<Line>, period: (i64, i64), max: u64, zone: &Zone| {
            let line = match slot {
                Some(line) if line.period() == period && line.active() == active => line,
                slot => slot.insert(Line::new(active, zone, period.0, period.1)),
            };
            line.allowance(max, zone, unix_secs)
        };
        if let Some(max) = caps.daily_max_impressions {
            let today = self.schedule.within_flight(self.day, self.day_ends);
            caps.daily_max_impressions =
                Some(allowance(&mut self.daily_line, today, max, &self.zone));
        }
        if let (Some(max), Some(from), Some(to)) = (
            caps.max_impressions,
            self.schedule.starts_at,
            self.schedule.ends_at,
        ) {
            caps.max_impressions = Some(allowance(
                &mut self.flight_line,
                (from, to),
                max,
                &self.zone,
            ));
        }
        caps
    }

    /// Whether one more impression stays within the caps, marking a missing lease as wanted.
    fn admits(&mut self, leased: bool, now_ms: i64) -> Admission {
        let now_secs = now_ms.div_euclid(1000);
        self.roll_day(now_secs);
        let under = |limit: Option<u64>, n: u64| limit.is_none_or(|max| n < max);
        if !under(self.caps.max_clicks, self.total(CLICKS)) {
            return Admission::No;
        }
        if !limited_impressions(&self.caps) {
            return Admission::Yes;
        }
        let caps = self.caps_at(now_secs);
        let within = under(caps.max_impressions, self.total(IMPRESSIONS))
            && under(caps.daily_max_impressions, self.total(TODAY));
        if !leased {
            return if within {
                Admission::Yes
            } else {
                Admission::No
            };
        }
        // Paced, an instance that already knows of as many impressions as are due asks for no
        // lease until the line has moved past them: a burst costs no lease call per request.
        if self.caps.pacing == Pacing::Even && !within {
            return Admission::No;
        }
        if self.lease_valid(now_ms) {
            Admission::Yes
        } else {
            self.starved = true;
            Admission::NeedsLease
        }
    }

    fn count_impression(&mut self, leased: bool) {
        self.counted[IMPRESSIONS] += 1;
        self.counted[TODAY] += 1;
        self.served_recently += 1;
        if leased && limited_impressions(&self.caps) {
            self.lease = self.lease.saturating_sub(1);
        }
    }
}

#[derive(Debug, Default)]
struct Live {
    state: Mutex<State>,
}

impl Live {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which cap an advert reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapKind {
    MaxImpressions,
    MaxClicks,
    DailyMaxImpressions,
}

/// A cap an advert reached: the limit, and for the daily cap the day in the advert's zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reached {
    pub advert: AdvertId,
    pub cap: CapKind,
    pub limit: u64,
    pub day: Option<String>,
}

impl Reached {
    fn new(advert: AdvertId, cap: CapKind, limit: u64, day: Option<String>) -> Self {
        Self {
            advert,
            cap,
            limit,
            day,
        }
    }
}

/// A decision's answer for one capped advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Yes,
    No,
    /// Within the caps as far as this instance knows, but it holds no lease to spend.
    NeedsLease,
}

/// One lease call's arguments, taken from an advert's state.
struct Call {
    advert: AdvertId,
    live: Arc<Live>,
    /// Running totals counted here, and the part Redis is known to have.
    counted: [u64; 3],
    acked: [u64; 3],
    claimed: u64,
    want: u64,
    caps: DeliveryCaps,
    day: i64,
}

/// What Redis answered for one advert.
enum Answer {
    Missing,
    Leased {
        granted: u64,
        held: u64,
        totals: [u64; 3],
    },
}

/// The Redis side: scripts, this instance's name in the hashes, and one lease call at a time.
struct Leases {
    redis: Redis,
    lease: Script,
    seed: Script,
    instance: String,
    /// Lease calls run one at a time: each claims the lease the instance holds, which another
    /// call in flight could change.
    one_at_a_time: tokio::sync::Mutex<()>,
    hold_ms: i64,
    /// Requests skip the on-demand lease until then (Redis just failed).
    request_path_paused_until: AtomicI64,
}

pub struct Delivery {
    adverts: RwLock<HashMap<AdvertId, Arc<Live>>>,
    db: Db,
    ledger: Arc<dyn Ledger>,
    leases: Option<Leases>,
}

impl Delivery {
    pub fn new(
        db: Db,
        redis: Option<Redis>,
        ledger: Arc<dyn Ledger>,
        sync_interval: Duration,
    ) -> Self {
        let leases = redis.map(|redis| Leases {
            redis,
            lease: Script::new(LEASE_SCRIPT),
            seed: Script::new(SEED_SCRIPT),
            instance: crate::platform::tokens::random_base62(12),
            one_at_a_time: tokio::sync::Mutex::new(()),
            // Every instance holding a lease makes a call within one sync interval (it reports
            // its use or gives the lease back), so two intervals and a margin cover them all.
            hold_ms: i64::try_from(sync_interval.as_millis()).unwrap_or(1000) * 2 + 250,
            request_path_paused_until: AtomicI64::new(0),
        });
        Self {
            adverts: RwLock::new(HashMap::new()),
            db,
            ledger,
            leases,
        }
    }

    fn live(&self, advert: AdvertId) -> Option<Arc<Live>> {
        self.adverts.read().ok()?.get(&advert).cloned()
    }

    fn leased(&self) -> bool {
        self.leases.is_some()
    }

    pub fn is_tracked(&self, advert: AdvertId) -> bool {
        self.live(advert).is_some()
    }

    /// Keeps a tracked advert's caps current (a cap set, changed or cleared). False when its
    /// time zone changed: its day is another, so it is no longer tracked here and must be
    /// tracked again from the settled totals of that day.
    pub fn set_caps(
        &self,
        advert: AdvertId,
        caps: &DeliveryCaps,
        zone: &Zone,
        schedule: Schedule,
    ) -> bool {
        let Some(live) = self.live(advert) else {
            return true;
        };
        let mut state = live.state();
        if state.zone != *zone {
            drop(state);
            if let Ok(mut adverts) = self.adverts.write() {
                adverts.remove(&advert);
            }
            return false;
        }
        state.caps = *caps;
        state.set_schedule(schedule);
        true
    }

    /// Starts tracking adverts from their settled totals: every pending count is moved into the
    /// database first, so the totals are the report's. Adverts already tracked are left alone.
    pub async fn track(
        &self,
        adverts: &[(AdvertId, DeliveryCaps, Zone, Schedule)],
    ) -> Result<(), DbError> {
        let now_secs = now_ms() / 1000;
        let new: Vec<(AdvertId, State)> = adverts
            .iter()
            .filter(|(id, _, _, _)| !self.is_tracked(*id))
            .map(|(id, caps, zone, schedule)| {
                let mut state = State {
                    caps: *caps,
                    zone: zone.clone(),
                    schedule: *schedule,
                    ..State::default()
                };
                state.roll_day(now_secs);
                (*id, state)
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let totals = self
            .settled_totals(new.iter().map(|(id, s)| (*id, s.day)).collect())
            .await?;
        let mut seeds = Vec::new();
        if let Ok(mut map) = self.adverts.write() {
            for ((id, mut state), (_, day, counts)) in new.into_iter().zip(totals) {
                state.shared = counts;
                map.entry(id).or_insert_with(|| {
                    seeds.push((id, day, counts));
                    Arc::new(Live {
                        state: Mutex::new(state),
                    })
                });
            }
        }
        // A hash that other instances already keep may lack what this instance served before it
        // knew of the cap: the settled totals raise it.
        if let Some(leases) = &self.leases
            && let Err(e) = self.seed(leases, &seeds, true).await
        {
            tracing::debug!(error = %e, "delivery totals not seeded in redis; the next lease does it");
        }
        Ok(())
    }

    /// Settles the ledger, then reads each advert's totals (a bounded query per
    /// `TOTALS_PER_QUERY` adverts, so a large catalogue's warm-up stays within each call's
    /// deadline).
    /// Each advert's totals with today's counted from `day`, the start of its own day.
    async fn settled_totals(
        &self,
        adverts: Vec<(AdvertId, i64)>,
    ) -> Result<Vec<(AdvertId, i64, [u64; 3])>, DbError> {
        self.ledger.settle().await?;
        self.stored_totals(&adverts).await
    }

    /// The database's totals of `adverts`, each advert's day counted from its own `day`: one
    /// bounded query per day start (adverts in one time zone share it) and `TOTALS_PER_QUERY`
    /// adverts.
    async fn stored_totals(
        &self,
        adverts: &[(AdvertId, i64)],
    ) -> Result<Vec<(AdvertId, i64, [u64; 3])>, DbError> {
        let mut by_day: HashMap<i64, Vec<AdvertId>> = HashMap::new();
        for (id, day) in adverts {
            by_day.entry(*day).or_default().push(*id);
        }
        let mut found = HashMap::with_capacity(adverts.len());
        for (day, ids) in by_day {
            for chunk in ids.chunks(TOTALS_PER_QUERY) {
                let ids = chunk.to_vec();
                found.extend(
                    self.db
                        .run(move |conn| store::delivered(conn, &ids, day))
                        .await?,
                );
            }
        }
        Ok(adverts
            .iter()
            .map(|(id, day)| (*id, *day, found.get(id).copied().unwrap_or_default()))
            .collect())
    }

    /// Seeds missing hashes from settled totals (`settled`), else only raises existing ones.
    async fn seed(
        &self,
        leases: &Leases,
        seeds: &[(AdvertId, i64, [u64; 3])],
        settled: bool,
    ) -> Result<(), crate::platform::redis::RedisError> {
        if seeds.is_empty() {
            return Ok(());
        }
        let invocations: Vec<_> = seeds
            .iter()
            .map(|(id, day, counts)| {
                let mut invocation = leases.seed.key(leases.redis.key(&live_key(*id)));
                invocation
                    .arg(counts[IMPRESSIONS])
                    .arg(counts[CLICKS])
                    .arg(format!("d{day}"))
                    .arg(counts[TODAY])
                    .arg(if settled { "seed" } else { "raise" });
                invocation
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.load_script(&leases.seed).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation).ignore();
        }
        leases
            .redis
            .with(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
    }

    /// Whether another impression of a capped advert stays within its caps (a decision's
    /// eligibility check). An advert not tracked yet is held back until its totals are loaded.
    pub fn admits(&self, advert: AdvertId, caps: &DeliveryCaps, now_ms: i64) -> Admission {
        let Some(live) = self.live(advert) else {
            return if caps.is_unlimited() {
                Admission::Yes
            } else {
                Admission::No
            };
        };
        live.state().admits(self.leased(), now_ms)
    }

    /// Counts one impression of a chosen advert. False (nothing counted) when the caps were
    /// reached since the decision: a concurrent request took the last of the budget.
    pub fn impression(&self, advert: AdvertId, now_ms: i64) -> bool {
        let Some(live) = self.live(advert) else {
            return true;
        };
        let leased = self.leased();
        let mut state = live.state();
        if state.admits(leased, now_ms) != Admission::Yes {
            return false;
        }
        state.count_impression(leased);
        true
    }

    /// The caps reached, as far as this instance knows, by every tracked advert: `max_clicks`
    /// and `max_impressions` (the caps themselves, not even pacing's share of them due so far)
    /// and today's `daily_max_impressions`, with the day in the advert's zone.
    pub fn reached(&self, now_ms: i64) -> Vec<Reached> {
        let Ok(adverts) = self.adverts.read() else {
            return Vec::new();
        };
        let mut reached = Vec::new();
        for (advert, live) in adverts.iter() {
            let mut state = live.state();
            state.roll_day(now_ms.div_euclid(1000));
            let caps = state.caps;
            let hit = |max: Option<u64>, n: u64| max.filter(|max| n >= *max);
            if let Some(limit) = hit(caps.max_clicks, state.total(CLICKS)) {
                reached.push(Reached::new(*advert, CapKind::MaxClicks, limit, None));
            }
            if let Some(limit) = hit(caps.max_impressions, state.total(IMPRESSIONS)) {
                reached.push(Reached::new(*advert, CapKind::MaxImpressions, limit, None));
            }
            if let Some(limit) = hit(caps.daily_max_impressions, state.total(TODAY)) {
                let day = state.zone.date(state.day);
                reached.push(Reached::new(
                    *advert,
                    CapKind::DailyMaxImpressions,
                    limit,
                    Some(day),
                ));
            }
        }
        reached
    }

    pub fn click(&self, advert: AdvertId) {
        if let Some(live) = self.live(advert) {
            live.state().counted[CLICKS] += 1;
        }
    }

    /// The request path's lease: adverts a decision wanted and found without a lease get one
    /// now (one round trip for all of them, bounded by `redis.timeout_ms`). True when any was
    /// granted, here or by the round this call waited for, so the decision is worth trying
    /// again.
    pub async fn lease_now(&self, adverts: &[AdvertId]) -> bool {
        let Some(leases) = &self.leases else {
            return false;
        };
        if adverts.is_empty()
            || leases.request_path_paused_until.load(Ordering::Relaxed) > now_ms()
            || leases.redis.is_quiet()
        {
            return false;
        }
        // Waits for a round in progress (it holds the lock for one pipeline), but no longer than
        // one Redis call: a round stuck on a hung Redis does not hold requests up twice.
        let Ok(_one) =
            tokio::time::timeout(leases.redis.timeout(), leases.one_at_a_time.lock()).await
        else {
            return false;
        };
        let now = now_ms();
        // A background round this call waited for may have leased some of them already.
        let mut leased_meanwhile = false;
        let calls: Vec<Call> = adverts
            .iter()
            .filter_map(|id| {
                let live = self.live(*id)?;
                let mut state = live.state();
                state.roll_day(now / 1000);
                if !limited_impressions(&state.caps) {
                    return None;
                }
                if state.lease_valid(now) {
                    leased_meanwhile = true;
                    return None;
                }
                let want = state.served_recently.clamp(1, MAX_BLOCK);
                Some(take_call(*id, &live, &mut state, want, now))
            })
            .collect();
        if calls.is_empty() {
            return leased_meanwhile;
        }
        match self.call(leases, calls, now).await {
            Ok((granted, _missing)) => granted || leased_meanwhile,
            Err(_) => {
                leases
                    .request_path_paused_until
                    .store(now_ms() + LEASE_RETRY_MS, Ordering::Relaxed);
                leased_meanwhile
            }
        }
    }

    /// One round with Redis: every advert with something to report, a lease to renew or give
    /// back, or a lease wanted. Proportional to the adverts served since the last round. False
    /// when Redis could not be reached (what was counted waits for the next round).
    pub async fn sync(&self, now_ms_: i64) -> bool {
        self.round(now_ms_, false).await
    }

    /// At shutdown: reports what was counted and gives every lease back.
    pub async fn release_all(&self) -> bool {
        self.round(now_ms(), true).await
    }

    async fn round(&self, now: i64, releasing: bool) -> bool {
        let Some(leases) = &self.leases else {
            return true;
        };
        let tracked: Vec<(AdvertId, Arc<Live>)> = match self.adverts.read() {
            Ok(adverts) => adverts.iter().map(|(a, l)| (*a, l.clone())).collect(),
            Err(_) => return false,
        };
        let one = leases.one_at_a_time.lock().await;
        let mut calls = Vec::new();
        for (advert, live) in tracked {
            let mut state = live.state();
            state.roll_day(now / 1000);
            let had_lease = state.lease > 0;
            let usable = if state.lease_valid(now) {
                state.lease
            } else {
                0
            };
            let active = state.served_recently > 0 || state.starved;
            // Ask for more while serving, before the lease runs out within the next round.
            let want = if releasing || !active || !limited_impressions(&state.caps) {
                0
            } else if usable < state.served_recently.max(1) {
                (state.served_recently * 2).clamp(1, MAX_BLOCK)
            } else {
                0
            };
            // An idle lease goes back, so the budget is with the instances that serve.
            if !active || releasing {
                state.lease = 0;
            }
            if !state.unacked() && !had_lease && want == 0 {
                continue;
            }
            calls.push(take_call(advert, &live, &mut state, want, now));
        }
        if calls.is_empty() {
            return true;
        }
        let answered = self.call(leases, calls, now).await;
        // Seeding settles the ledger (a flush): requests wanting a lease do not wait for it.
        drop(one);
        match answered {
            Ok((_, missing)) => {
                if !missing.is_empty() {
                    self.reseed(leases, missing).await;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Raises every capped advert's shared totals in Redis to what the database holds (never
    /// lowers them): a use report lost with an instance that died before sending it is in the
    /// database once the ledger flushes, and from then on counts toward the cap. Without Redis
    /// there is nothing to reconcile (one instance counts everything itself).
    pub async fn reconcile(&self) -> Result<(), DbError> {
        let Some(leases) = &self.leases else {
            return Ok(());
        };
        let capped = self.days_of(|state| limited_impressions(&state.caps));
        let totals = self.stored_totals(&capped).await?;
        for chunk in totals.chunks(TOTALS_PER_QUERY) {
            if let Err(e) = self.seed(leases, chunk, false).await {
                tracing::debug!(error = %e, "reconciling delivery totals failed; tried again later");
                return Ok(());
            }
        }
        Ok(())
    }

    /// The tracked adverts `wanted` accepts, each with the start of its current day.
    fn days_of(&self, wanted: impl Fn(&State) -> bool) -> Vec<(AdvertId, i64)> {
        let now_secs = now_ms() / 1000;
        let Ok(adverts) = self.adverts.read() else {
            return Vec::new();
        };
        adverts
            .iter()
            .filter_map(|(id, live)| {
                let mut state = live.state();
                state.roll_day(now_secs);
                wanted(&state).then_some((*id, state.day))
            })
            .collect()
    }

    /// Sends lease calls in one pipeline and applies the answers: whether any lease was granted,
    /// and the adverts whose hash is missing (the background round seeds them; on the request
    /// path they wait for that round).
    async fn call(
        &self,
        leases: &Leases,
        calls: Vec<Call>,
        sent_at: i64,
    ) -> Result<(bool, Vec<AdvertId>), crate::platform::redis::RedisError> {
        let invocations: Vec<_> = calls
            .iter()
            .map(|c| {
                let cap =
                    |limit: Option<u64>| limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
                let mut invocation = leases.lease.key(leases.redis.key(&live_key(c.advert)));
                invocation
                    .arg(&leases.instance)
                    .arg(c.counted[IMPRESSIONS])
                    .arg(c.counted[TODAY])
                    .arg(c.counted[CLICKS])
                    .arg(format!("d{}", c.day))
                    .arg(c.acked[IMPRESSIONS])
                    .arg(c.acked[TODAY])
                    .arg(c.acked[CLICKS])
                    .arg(c.claimed)
                    .arg(c.want)
                    .arg(cap(c.caps.max_impressions))
                    .arg(cap(c.caps.daily_max_impressions))
                    .arg(LEASE_TTL_MS)
                    .arg(leases.hold_ms)
                    .arg(format!("d{}", c.day - 2 * 86_400));
                invocation
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.load_script(&leases.lease).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let result: Result<Vec<Vec<i64>>, _> = leases
            .redis
            .with(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await;
        let answers = match result {
            Ok(answers) if answers.len() == calls.len() => answers,
            // Nothing is known to have landed; the running totals go again with the next call.
            Ok(_) => return Ok((false, Vec::new())),
            Err(e) => {
                tracing::debug!(error = %e, "delivery lease round failed");
                return Err(e);
            }
        };
        let mut any_granted = false;
        let mut missing = Vec::new();
        for (c, answer) in calls.into_iter().zip(answers) {
            let mut state = c.live.state();
            match parse_answer(&answer) {
                Some(Answer::Leased {
                    granted,
                    held,
                    totals,
                }) => {
                    let same_day = state.day == c.day;
                    state.acked = [
                        c.counted[IMPRESSIONS],
                        c.counted[CLICKS],
                        if same_day { c.counted[TODAY] } else { 0 },
                    ];
                    state.shared = [
                        totals[IMPRESSIONS],
                        totals[CLICKS],
                        if same_day { totals[TODAY] } else { 0 },
                    ];
                    // What Redis no longer counts as ours (a lease it took back) is void here.
                    let voided = c.claimed.saturating_sub(held.saturating_sub(granted));
                    state.lease = state.lease.saturating_sub(voided) + granted;
                    if held > 0 {
                        state.lease_until_ms = sent_at + LEASE_TTL_MS - LEASE_MARGIN_MS;
                    }
                    any_granted |= granted > 0;
                }
                Some(Answer::Missing) => {
                    // The lease was in the hash Redis lost: void.
                    state.lease = 0;
                    state.starved = true;
                    missing.push(c.advert);
                }
                None => {
                    tracing::warn!(advert_id = %c.advert, ?answer, "unexpected answer from the delivery lease script")
                }
            }
        }
        Ok((any_granted, missing))
    }

    /// Hashes that Redis lost (or never had) are seeded from the settled ledger. What this
    /// instance counted since its last answer is reported again by the next call, so an
    /// impression both settled and reported counts twice (under-delivery, never overshoot).
    async fn reseed(&self, leases: &Leases, missing: Vec<AdvertId>) {
        let n = missing.len();
        let missing: std::collections::HashSet<AdvertId> = missing.into_iter().collect();
        let missing: Vec<(AdvertId, i64)> = self
            .days_of(|_| true)
            .into_iter()
            .filter(|(id, _)| missing.contains(id))
            .collect();
        match self.settled_totals(missing).await {
            Ok(seeds) => {
                tracing::info!(
                    adverts = n,
                    "delivery totals missing in redis: seeded from the settled ledger"
                );
                if let Err(e) = self.seed(leases, &seeds, true).await {
                    tracing::debug!(error = %e, "seeding delivery totals failed; tried again next round");
                }
            }
            // The adverts wait for a lease (not served) until the database answers.
            Err(e) => {
                tracing::warn!(error = %e, adverts = n, "delivery totals missing in redis and the ledger cannot be settled; these capped adverts wait")
            }
        }
    }
}

/// A lease call for one advert: it reports everything counted so far (the claim that follows
/// says what is left of the lease, so the use must travel with it).
/// With even pacing its caps are what is due at `now`.
fn take_call(advert: AdvertId, live: &Arc<Live>, state: &mut State, want: u64, now: i64) -> Call {
    if !state.lease_valid(now_ms()) {
        state.lease = 0;
    }
    state.served_recently = 0;
    state.starved = false;
    Call {
        advert,
        live: live.clone(),
        counted: state.counted,
        acked: state.acked,
        claimed: state.lease,
        want,
        caps: state.caps_at(now.div_euclid(1000)),
        day: state.day,
    }
}

fn live_key(advert: AdvertId) -> String {
    format!("live:{}", advert.0)
}

fn parse_answer(answer: &[i64]) -> Option<Answer> {
    let n = |i: usize| answer.get(i).and_then(|v| u64::try_from(*v).ok());
    match answer.first()? {
        -1 => Some(Answer::Missing),
        1 => Some(Answer::Leased {
            granted: n(1)?,
            held: n(2)?,
            totals: [n(3)?, n(5)?, n(4)?],
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(max_impressions: u64) -> State {
        State {
            caps: DeliveryCaps {
                max_impressions: Some(max_impressions),
                ..DeliveryCaps::default()
            },
            ..State::default()
        }
    }

    #[test]
    fn without_redis_the_totals_admit_exactly_up_to_the_cap() {
        let mut state = capped(3);
        state.shared[IMPRESSIONS] = 1;
        let mut served = 0;
        for _ in 0..10 {
            if state.admits(false, 1000) == Admission::Yes {
                state.count_impression(false);
                served += 1;
            }
        }
        assert_eq!(served, 2);
        assert_eq!(state.total(IMPRESSIONS), 3);
    }

    #[test]
    fn a_cleared_cap_still_counts_so_a_restored_cap_sees_the_true_total() {
        let mut state = capped(10);
        for _ in 0..5 {
            assert_eq!(state.admits(false, 1000), Admission::Yes);
            state.count_impression(false);
        }
        state.caps = DeliveryCaps::default();
        for _ in 0..20 {
            assert_eq!(state.admits(false, 1000), Admission::Yes);
            state.count_impression(false);
        }
        state.caps.max_impressions = Some(10);
        assert_ne!(state.admits(false, 1000), Admission::Yes);
        assert_eq!(state.total(IMPRESSIONS), 25);
    }

    #[test]
    fn with_leases_only_the_lease_is_spent_and_a_missing_one_is_wanted() {
        let mut state = capped(100);
        assert_ne!(state.admits(true, 1000), Admission::Yes);
        assert!(state.starved);
        state.lease = 2;
        state.lease_until_ms = 5000;
        for _ in 0..2 {
            assert_eq!(state.admits(true, 1000), Admission::Yes);
            state.count_impression(true);
        }
        assert_ne!(
            state.admits(true, 1000),
            Admission::Yes,
            "the lease is spent"
        );
        state.lease = 5;
        assert_ne!(
            state.admits(true, 5000),
            Admission::Yes,
            "an expired lease is not spent"
        );
    }

    #[test]
    fn a_click_cap_stops_delivery_once_reached() {
        let mut state = State {
            caps: DeliveryCaps {
                max_clicks: Some(2),
                ..DeliveryCaps::default()
            },
            ..State::default()
        };
        state.shared[CLICKS] = 1;
        assert_eq!(
            state.admits(true, 1000),
            Admission::Yes,
            "no lease is needed for a click cap"
        );
        state.counted[CLICKS] += 1;
        assert_ne!(state.admits(true, 1000), Admission::Yes);
    }

    #[test]
    fn a_new_day_starts_the_daily_count_again() {
        let mut state = State {
            caps: DeliveryCaps {
                daily_max_impressions: Some(1),
                ..DeliveryCaps::default()
            },
            ..State::default()
        };
        assert_eq!(state.admits(false, 1000), Admission::Yes);
        state.count_impression(false);
        assert_ne!(state.admits(false, 2000), Admission::Yes);
        assert_eq!(state.admits(false, 86_400_000 + 1000), Admission::Yes);
    }

    #[test]
    fn the_daily_count_starts_again_at_midnight_of_the_advert_time_zone() {
        let mut state = State {
            caps: DeliveryCaps {
                daily_max_impressions: Some(1),
                ..DeliveryCaps::default()
            },
            zone: Zone::parse("Asia/Tokyo").unwrap_or_default(),
            ..State::default()
        };
        // 2026-12-03 14:00 UTC is 23:00 in Tokyo; its next day begins at 15:00 UTC.
        let evening = 1_796_306_400_000;
        assert_eq!(state.admits(false, evening), Admission::Yes);
        state.count_impression(false);
        assert_ne!(state.admits(false, evening + 3_599_999), Admission::Yes);
        assert_eq!(state.admits(false, evening + 3_600_000), Admission::Yes);
        assert_eq!(state.day, 1_796_310_000);
    }

    /// 2026-12-03T00:00:00Z, a Thursday.
    const THURSDAY: i64 = 1_796_256_000;

    fn paced(caps: DeliveryCaps, zone: &str, schedule: Schedule) -> State {
        State {
            caps: DeliveryCaps {
                pacing: Pacing::Even,
                ..caps
            },
            zone: Zone::parse(zone).unwrap_or_default(),
            schedule,
            ..State::default()
        }
    }

    fn daily(max: u64) -> DeliveryCaps {
        DeliveryCaps {
            daily_max_impressions: Some(max),
            ..DeliveryCaps::default()
        }
    }

    /// Drives `state` with a fake clock over the seconds `from..to`: `requests(t)` requests at
    /// second `t`, each served when admitted. After every second, the count `counter` stays
    /// within ±10 % of `due(t)` (within one impression while fewer than ten are due) and never
    /// passes `cap`. Returns what the burst second `burst` served.
    fn follow_the_line(
        state: &mut State,
        counter: usize,
        (from, to): (i64, i64),
        requests: impl Fn(i64) -> u32,
        due: impl Fn(i64) -> f64,
        (cap, burst): (u64, i64),
    ) -> u64 {
        let mut in_burst = 0;
        for t in from..to {
            let before = state.total(counter);
            for _ in 0..requests(t) {
                if state.admits(false, t * 1000) == Admission::Yes {
                    state.count_impression(false);
                }
            }
            if t == burst {
                in_burst = state.total(counter) - before;
            }
            let delivered = state.total(counter);
            let line = due(t);
            assert!(delivered <= cap, "at {t}: {delivered} past the cap {cap}");
            assert!(
                (delivered as f64 - line).abs() <= (line * 0.1).max(1.0),
                "at {t} (second {} of the run): {delivered} delivered, {line:.2} due",
                t - from
            );
        }
        in_burst
    }

    #[test]
    fn even_pacing_follows_the_line_through_a_day_and_a_burst_gets_only_what_is_due() {
        let cap = 20_000;
        let ten = THURSDAY + 10 * 3600;
        // One request a second, and a hundred at 10:00.
        let traffic = |t: i64| if t == ten { 100 } else { 1 };
        let line = |t: i64| cap as f64 * (t - THURSDAY + 1).min(86_400) as f64 / 86_400.0;
        let mut state = paced(daily(cap), "UTC", Schedule::default());
        let in_burst = follow_the_line(
            &mut state,
            TODAY,
            (THURSDAY, THURSDAY + 86_400),
            traffic,
            line,
            (cap, ten),
        );
        assert!(in_burst <= 1, "the burst got {in_burst}");
        assert_eq!(state.total(TODAY), cap, "the whole day's cap by midnight");
        // The next day starts again from nothing due.
        assert_eq!(
            state.admits(false, (THURSDAY + 86_400) * 1000),
            Admission::Yes
        );
        state.count_impression(false);
        assert_eq!(
            state.admits(false, (THURSDAY + 86_401) * 1000),
            Admission::No
        );

        // As soon as possible, the same burst takes what traffic brings.
        let mut asap = State {
            caps: daily(cap),
            ..State::default()
        };
        let served = (0..100)
            .filter(|_| {
                let yes = asap.admits(false, ten * 1000) == Admission::Yes;
                if yes {
                    asap.count_impression(false);
                }
                yes
            })
            .count();
        assert_eq!(served, 100);
    }

    #[test]
    fn even_pacing_spreads_the_day_over_targeted_hours_of_its_zone_within_the_flight() {
        // Berlin (UTC+1), 09:00–18:00 there, and a flight that starts at 11:00 there: seven
        // active hours, 10:00Z to 17:00Z.
        let cap = 7_000;
        let targeting = crate::domain::targeting::Targeting::from_json(&serde_json::json!({
            "hours": [9, 10, 11, 12, 13, 14, 15, 16, 17], "timezone": "Europe/Berlin"
        }))
        .unwrap_or_default();
        let (opens, closes) = (THURSDAY + 10 * 3600, THURSDAY + 17 * 3600);
        let schedule = Schedule::new(targeting.active_time(), Some(opens * 1000), None);
        let mut state = paced(daily(cap), "Europe/Berlin", schedule);
        let burst = THURSDAY + 13 * 3600;
        // Serving shows it only in its active time: a request a second then, a thousand at
        // 14:00 Berlin.
        let traffic = |t: i64| match t {
            t if t == burst => 1000,
            t if (opens..closes).contains(&t) => 1,
            _ => 0,
        };
        let line = |t: i64| cap as f64 * ((t + 1).clamp(opens, closes) - opens) as f64 / 25_200.0;
        let in_burst = follow_the_line(
            &mut state,
            TODAY,
            (THURSDAY - 3600, THURSDAY + 23 * 3600),
            traffic,
            line,
            (cap, burst),
        );
        assert!(in_burst <= 1, "the burst got {in_burst}");
        assert_eq!(state.total(TODAY), cap);
        assert_eq!(state.day, THURSDAY - 3600, "Berlin's day");
    }

    #[test]
    fn even_pacing_spreads_max_impressions_over_a_flight_with_a_start_and_an_end() {
        let cap = 3_000;
        let (starts, ends) = (THURSDAY + 6 * 3600, THURSDAY + 2 * 86_400 + 6 * 3600);
        let schedule = Schedule::new(
            crate::domain::targeting::ActiveTime::default(),
            Some(starts * 1000),
            Some(ends * 1000),
        );
        let caps = DeliveryCaps {
            max_impressions: Some(cap),
            ..DeliveryCaps::default()
        };
        let mut state = paced(caps, "UTC", schedule);
        let burst = starts + 30 * 3600;
        let traffic = |t: i64| if t == burst { 10_000 } else { 1 };
        let line = |t: i64| cap as f64 * ((t + 1).min(ends) - starts) as f64 / 172_800.0;
        let in_burst = follow_the_line(
            &mut state,
            IMPRESSIONS,
            (starts, ends),
            traffic,
            line,
            (cap, burst),
        );
        assert!(in_burst <= 1, "the burst got {in_burst}");
        assert_eq!(state.total(IMPRESSIONS), cap);
    }

    #[test]
    fn without_a_flight_end_or_a_cap_even_pacing_changes_nothing() {
        let open_ended = Schedule::new(
            crate::domain::targeting::ActiveTime::default(),
            Some(THURSDAY * 1000),
            None,
        );
        let caps = DeliveryCaps {
            max_impressions: Some(50),
            max_clicks: Some(5),
            ..DeliveryCaps::default()
        };
        let mut state = paced(caps, "UTC", open_ended);
        let noon = (THURSDAY + 12 * 3600) * 1000;
        for _ in 0..50 {
            assert_eq!(state.admits(false, noon), Admission::Yes);
            state.count_impression(false);
        }
        assert_eq!(state.admits(false, noon), Admission::No, "the cap itself");
    }

    #[test]
    fn a_change_of_pacing_is_judged_at_once() {
        let noon = (THURSDAY + 12 * 3600) * 1000;
        let mut state = paced(daily(1_000), "UTC", Schedule::default());
        for _ in 0..501 {
            assert_eq!(state.admits(false, noon), Admission::Yes);
            state.count_impression(false);
        }
        assert_eq!(state.admits(false, noon), Admission::No, "501 due by noon");
        state.caps.pacing = Pacing::Asap;
        assert_eq!(state.admits(false, noon), Admission::Yes);
        state.caps.pacing = Pacing::Even;
        assert_eq!(state.admits(false, noon), Admission::No);
    }

    #[test]
    fn with_leases_pacing_asks_redis_only_for_what_is_due() {
        let six = (THURSDAY + 6 * 3600) * 1000;
        let mut state = paced(daily(400), "UTC", Schedule::default());
        // A quarter of the day: 100 due, the 101st may go.
        assert_eq!(state.admits(true, six), Admission::NeedsLease);
        let live = Arc::new(Live::default());
        let call = take_call(AdvertId(1), &live, &mut state, 10, six);
        assert_eq!(
            call.caps.daily_max_impressions,
            Some(101),
            "the lease script's cap"
        );
        assert_eq!(call.caps.pacing, Pacing::Even);
        // Once it knows of what is due, it asks for nothing until the line moves on.
        state.shared[TODAY] = 101;
        assert_eq!(state.admits(true, six), Admission::No);
        state.lease = 5;
        state.lease_until_ms = six + 300_000;
        assert_eq!(state.admits(true, six), Admission::No, "not past the line");
        assert_eq!(
            state.admits(true, six + 216_000),
            Admission::Yes,
            "1 more due"
        );
    }

    #[test]
    fn answers_parse_and_anything_else_is_refused() {
        assert!(matches!(parse_answer(&[-1]), Some(Answer::Missing)));
        assert!(matches!(
            parse_answer(&[1, 2, 3, 40, 5, 6]),
            Some(Answer::Leased {
                granted: 2,
                held: 3,
                totals: [40, 6, 5]
            })
        ));
        assert!(parse_answer(&[1, 2]).is_none());
        assert!(parse_answer(&[]).is_none());
    }

    /// A request that needs a lease waits for the round in progress; when that round leased the
    /// advert, the request's decision is tried again without a call of its own.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_request_waiting_for_a_round_that_leased_its_advert_tries_again() {
        struct Settled;
        #[async_trait]
        impl Ledger for Settled {
            async fn settle(&self) -> Result<(), DbError> {
                Ok(())
            }
        }
        let (_dir, db) = Db::temporary();
        // Nothing listens there: a call of the request's own would fail.
        let redis = Redis::from_settings(&crate::platform::redis::RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            prefix: "t:".into(),
            pool_size: 1,
            timeout_ms: 2000,
        })
        .unwrap();
        let delivery = Delivery::new(db, redis, Arc::new(Settled), Duration::from_secs(1));
        let advert = AdvertId(7);
        let live = Arc::new(Live::default());
        live.state().caps = capped(10).caps;
        delivery
            .adverts
            .write()
            .unwrap()
            .insert(advert, live.clone());
        let round = delivery.leases.as_ref().unwrap().one_at_a_time.lock().await;
        let wanted = [advert];
        let (retry, ()) = tokio::join!(delivery.lease_now(&wanted), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut state = live.state();
            state.lease = 5;
            state.lease_until_ms = now_ms() + 10_000;
            drop(state);
            drop(round);
        });
        assert!(retry);
        assert_eq!(
            delivery.admits(advert, &capped(10).caps, now_ms()),
            Admission::Yes
        );
    }
}
