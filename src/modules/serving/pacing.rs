//! Even pacing: the pro-rata line an impression cap follows over a period (a day of the
//! advert's time zone, or its whole flight). What is due at a moment is the cap times the share
//! of the period's active time (targeted days and hours, within `starts_at`…`ends_at`) elapsed
//! by then. The line depends on the time alone, so every instance draws the same one. Described
//! in docs/ARCHITECTURE.md ("Pacing").

use crate::domain::targeting::{ActiveTime, Zone};

/// A flight's active time is counted hour by hour over at most this long (two years); past it,
/// at the share of active time of those two years, so that a flight ending in a distant year
/// costs a bounded walk.
const WALKED_SECS: i64 = 2 * 366 * 86_400;

/// When an advert may be served, as pacing spreads its caps: its targeted weekdays and hours
/// within its flight (Unix seconds; `None`: open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedule {
    pub active: ActiveTime,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
}

impl Schedule {
    /// From the advert's targeting and its flight in milliseconds.
    pub fn new(active: ActiveTime, starts_at_ms: Option<i64>, ends_at_ms: Option<i64>) -> Self {
        Self {
            active,
            starts_at: starts_at_ms.map(|ms| ms.div_euclid(1000)),
            ends_at: ends_at_ms.map(|ms| ms.div_euclid(1000)),
        }
    }

    /// The part of `from`…`to` inside the flight (empty: `from >= to`).
    pub fn within_flight(&self, from: i64, to: i64) -> (i64, i64) {
        (
            from.max(self.starts_at.unwrap_or(i64::MIN)),
            to.min(self.ends_at.unwrap_or(i64::MAX)),
        )
    }
}

/// The pro-rata line of a cap over one period. It keeps a cursor (the active seconds elapsed up
/// to the start of the local hour last asked about), so that asking again within the hour is
/// arithmetic, and moving on walks only the hours passed since.
#[derive(Debug, Clone)]
pub struct Line {
    /// The period as asked for; `from`…`to` is it, or empty when it ends before it begins.
    period: (i64, i64),
    from: i64,
    to: i64,
    active: ActiveTime,
    /// Active seconds in the whole period.
    total: i64,
    /// Active seconds in `from`…`at`; the local hour `at`…`hour_ends` is active or not.
    at: i64,
    elapsed: i64,
    hour_ends: i64,
    hour_active: bool,
}

impl Line {
    /// The line over `from`…`to` (Unix seconds) of an advert active at `active` in `zone`.
    pub fn new(active: ActiveTime, zone: &Zone, from: i64, to: i64) -> Self {
        let mut line = Self {
            period: (from, to),
            from,
            to: to.max(from),
            active,
            total: 0,
            at: from,
            elapsed: 0,
            hour_ends: from,
            hour_active: false,
        };
        let walked_to = line.to.min(from.saturating_add(WALKED_SECS));
        let walked = line.elapsed(zone, walked_to);
        let rest = i128::from(line.to - walked_to) * i128::from(walked)
            / i128::from((walked_to - from).max(1));
        line.total = walked.saturating_add(i64::try_from(rest).unwrap_or(i64::MAX));
        line.rewind();
        line
    }

    pub fn period(&self) -> (i64, i64) {
        self.period
    }

    pub fn active(&self) -> ActiveTime {
        self.active
    }

    fn rewind(&mut self) {
        self.at = self.from;
        self.elapsed = 0;
        self.hour_ends = self.from;
        self.hour_active = false;
    }

    /// Active seconds of the period elapsed by `now`.
    fn elapsed(&mut self, zone: &Zone, now: i64) -> i64 {
        let now = now.clamp(self.from, self.to);
        if self.active.is_always() {
            return now - self.from;
        }
        if now < self.at {
            // A clock that went back: walk again from the start.
            self.rewind();
        }
        while now >= self.hour_ends && self.hour_ends < self.to {
            if self.hour_active {
                self.elapsed += self.hour_ends - self.at;
            }
            self.at = self.hour_ends;
            self.hour_ends = zone.next_hour(self.at).min(self.to);
            self.hour_active = self.active.admits(zone, self.at);
        }
        self.elapsed + if self.hour_active { now - self.at } else { 0 }
    }

    /// How many impressions of `cap` may have been delivered by `now`: the line's value rounded
    /// down, plus one so that the first impression of a period can go, never more than the cap.
    /// A period without active time (the advert is not served in it) does not limit.
    pub fn allowance(&mut self, cap: u64, zone: &Zone, now: i64) -> u64 {
        if self.total <= 0 {
            return cap;
        }
        let elapsed = u128::try_from(self.elapsed(zone, now)).unwrap_or(0);
        let total = u128::try_from(self.total).unwrap_or(1);
        let due = u128::from(cap) * elapsed / total;
        u64::try_from(due)
            .unwrap_or(u64::MAX)
            .saturating_add(1)
            .min(cap)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::targeting::Targeting;

    fn at(rfc3339: &str) -> i64 {
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn the_line_climbs_only_in_active_hours_and_reaches_the_cap_at_the_end() {
        let targeting = Targeting::from_json(
            &json!({"hours": [9, 10, 11, 12, 13, 14, 15, 16, 17], "timezone": "Europe/Berlin"}),
        )
        .unwrap();
        let zone = &targeting.timezone;
        let (day, ends) = zone.day(at("2026-12-03T12:00:00Z"));
        assert_eq!(day, at("2026-12-02T23:00:00Z"));
        let mut line = Line::new(targeting.active_time(), zone, day, ends);
        assert_eq!(line.total, 9 * 3600);
        // Before 09:00 Berlin nothing is due but the first impression.
        assert_eq!(line.allowance(900, zone, at("2026-12-03T07:59:59Z")), 1);
        // Half the active time by 13:30 Berlin.
        assert_eq!(line.allowance(900, zone, at("2026-12-03T12:30:00Z")), 451);
        // Flat after 18:00 Berlin at the cap.
        assert_eq!(line.allowance(900, zone, at("2026-12-03T17:00:00Z")), 900);
        assert_eq!(line.allowance(900, zone, at("2026-12-03T22:59:59Z")), 900);
        // Asked again earlier (a clock set back), the line is walked again, not broken.
        assert_eq!(line.allowance(900, zone, at("2026-12-03T08:30:00Z")), 51);
    }

    #[test]
    fn a_day_whose_clocks_go_back_has_twenty_five_active_hours() {
        let zone = Zone::parse("Europe/Berlin").unwrap();
        let (day, ends) = zone.day(at("2026-10-25T12:00:00Z"));
        assert_eq!(ends - day, 25 * 3600);
        let line = Line::new(ActiveTime::default(), &zone, day, ends);
        assert_eq!(line.total, 25 * 3600);
        let every_hour = Targeting::from_json(
            &json!({"hours": (0..24).collect::<Vec<u8>>(), "timezone": "Europe/Berlin"}),
        )
        .unwrap()
        .active_time();
        let line = Line::new(every_hour, &zone, day, ends);
        assert_eq!(line.total, 25 * 3600, "hour by hour, the same");
    }

    #[test]
    fn a_flight_years_long_is_walked_for_two_years_and_counted_at_their_share_after() {
        let business = Targeting::from_json(&json!({"hours": [9, 10, 11, 12, 13, 14, 15, 16]}))
            .unwrap()
            .active_time();
        let zone = Zone::utc();
        let from = at("2026-12-03T00:00:00Z");
        let to = at("2126-12-03T00:00:00Z");
        let started = std::time::Instant::now();
        let mut line = Line::new(business, &zone, from, to);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(line.total, (to - from) / 3);
        assert_eq!(line.period(), (from, to));
        assert_eq!(line.allowance(3_000, &zone, from + 10 * 86_400), 1);
        assert_eq!(line.allowance(3_000, &zone, to), 3_000);
    }

    #[test]
    fn a_flight_clips_the_period_and_an_empty_one_does_not_limit() {
        let schedule = Schedule::new(
            ActiveTime::default(),
            Some(at("2026-12-03T12:00:00Z") * 1000),
            None,
        );
        let zone = Zone::utc();
        let (day, ends) = zone.day(at("2026-12-03T12:00:00Z"));
        let (from, to) = schedule.within_flight(day, ends);
        assert_eq!((from, to), (at("2026-12-03T12:00:00Z"), ends));
        let mut line = Line::new(schedule.active, &zone, from, to);
        assert_eq!(line.allowance(120, &zone, at("2026-12-03T18:00:00Z")), 61);
        let mut empty = Line::new(schedule.active, &zone, ends, day);
        assert_eq!(empty.allowance(120, &zone, at("2026-12-03T18:00:00Z")), 120);
    }
}
