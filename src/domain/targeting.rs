//! Who an advert is for: the devices and countries it is shown to, and the weekdays and hours of
//! its own time zone it is shown on. Every key is optional; an advert without targeting is shown
//! to everyone at any time. The time zone is also the day of `daily_max_impressions`.
//!
//! Days and hours combine as a grid: `days: [fri]`, `hours: [23, 0]` is Friday 23:00–24:00 and
//! Friday 00:00–01:00, both in the advert's time zone.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::invalid::Invalid;

/// What a viewer reads an advert on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Desktop,
    Mobile,
    Tablet,
}

impl Device {
    pub const ALL: [Self; 3] = [Self::Desktop, Self::Mobile, Self::Tablet];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let wanted = raw.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == wanted)
            .ok_or_else(|| {
                Invalid::new("invalid", "must be one of: desktop, mobile, tablet")
                    .allowing(Self::ALL.map(|d| d.as_str().to_owned()).to_vec())
            })
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The device a browser's User-Agent names; `None` for crawlers, consoles, televisions and
    /// anything unrecognised. Tablets: iPads, Android without `Mobile` (Google's rule for
    /// tablets), and agents that say `Tablet`. An iPad asking for the desktop site (Safari's
    /// default since iPadOS 13) says it is a Mac, and is a desktop here.
    pub fn from_user_agent(user_agent: &str) -> Option<Self> {
        let parsed = woothee::parser::Parser::new().parse(user_agent)?;
        match parsed.category {
            "pc" => Some(Self::Desktop),
            "mobilephone" => Some(Self::Mobile),
            "smartphone" => {
                let tablet = parsed.name == "iPad"
                    || parsed.os == "iPad"
                    || user_agent.contains("Tablet")
                    || (parsed.os == "Android" && !user_agent.contains("Mobile"));
                Some(if tablet { Self::Tablet } else { Self::Mobile })
            }
            _ => None,
        }
    }
}

/// Every ISO 3166-1 alpha-2 code officially assigned, and `XK` (Kosovo, user-assigned), which
/// CDNs send in their country headers.
const COUNTRY_CODES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
    BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
    DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU \
    ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ \
    LA LB LC LI LK LR LS LT LU LV LY \
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
    NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA \
    RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
    TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
    VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW";

/// A country: an ISO 3166-1 alpha-2 code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Every code accepted.
    pub fn all() -> impl Iterator<Item = &'static str> {
        COUNTRY_CODES.split_ascii_whitespace()
    }

    /// A code in either case; `None` for anything that is not an assigned code (a CDN's `XX`
    /// for unknown or `T1` for Tor included).
    pub fn known(raw: &str) -> Option<Self> {
        // Read for every serve and click when `serving.country_header` is set: no allocation.
        let [a, b]: [u8; 2] = raw.as_bytes().try_into().ok()?;
        let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
        Self::all()
            .any(|c| c.as_bytes() == code)
            .then_some(Self(code))
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Self::known(raw).ok_or_else(|| {
            Invalid::new(
                "invalid",
                "must be an ISO 3166-1 alpha-2 country code, such as DE or US",
            )
            .allowing(Self::all().map(str::to_owned).collect())
        })
    }

    pub fn as_str(&self) -> &str {
        // Built only from ASCII codes.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::known(&raw).ok_or_else(|| serde::de::Error::custom(format!("{raw:?} is no country")))
    }
}

/// A day of the week.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub const ALL: [Self; 7] = [
        Self::Mon,
        Self::Tue,
        Self::Wed,
        Self::Thu,
        Self::Fri,
        Self::Sat,
        Self::Sun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mon => "mon",
            Self::Tue => "tue",
            Self::Wed => "wed",
            Self::Thu => "thu",
            Self::Fri => "fri",
            Self::Sat => "sat",
            Self::Sun => "sun",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let wanted = raw.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == wanted)
            .ok_or_else(|| {
                Invalid::new(
                    "invalid",
                    "must be one of: mon, tue, wed, thu, fri, sat, sun",
                )
                .allowing(Self::ALL.map(|d| d.as_str().to_owned()).to_vec())
            })
    }

    /// For people: `Mon` … `Sun`.
    pub fn label(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self as usize]
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Sorted hours as runs of consecutive ones, first and last: `[9, 10, 11, 20]` is
/// `[(9, 11), (20, 20)]`.
pub fn hour_runs(hours: &[u8]) -> Vec<(u8, u8)> {
    let mut runs: Vec<(u8, u8)> = Vec::new();
    for &hour in hours {
        match runs.last_mut() {
            Some((_, last)) if hour == *last + 1 => *last = hour,
            _ => runs.push((hour, hour)),
        }
    }
    runs
}

/// An hour of the day, 0 to 23.
pub fn parse_hour(raw: &str) -> Result<u8, Invalid> {
    raw.trim()
        .parse::<u8>()
        .ok()
        .filter(|h| *h < 24)
        .ok_or_else(|| {
            Invalid::new("out_of_range", "must be an hour from 0 to 23")
                .allowing((0..24).map(|h: u8| h.to_string()).collect())
        })
}

/// An IANA time zone (`Europe/Berlin`), from the database built into the binary, so that every
/// instance agrees whatever its host has installed. It remembers the local weekday and hour of
/// the last quarter hour it was asked about: every time zone in use is a whole number of quarter
/// hours from UTC and changes its offset on a quarter hour, so within one they cannot change.
#[derive(Debug)]
pub struct Zone {
    tz: jiff::tz::TimeZone,
    name: Box<str>,
    /// (quarter hour since the epoch + 1) << 8 | weekday << 5 | hour; 0: nothing yet.
    last: AtomicU64,
}

impl Clone for Zone {
    fn clone(&self) -> Self {
        Self {
            tz: self.tz.clone(),
            name: self.name.clone(),
            last: AtomicU64::new(self.last.load(Ordering::Relaxed)),
        }
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

impl Default for Zone {
    fn default() -> Self {
        Self::utc()
    }
}

const QUARTER_HOUR: i64 = 900;

impl Zone {
    pub fn utc() -> Self {
        Self {
            tz: jiff::tz::TimeZone::UTC,
            name: "UTC".into(),
            last: AtomicU64::new(0),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        if name.eq_ignore_ascii_case("utc") {
            return Ok(Self::utc());
        }
        // Names are matched in any case and parsed zones are cached by the database; the
        // name kept is the database's own spelling (`europe/berlin` is `Europe/Berlin`).
        match jiff::tz::db().get(name) {
            Ok(tz) => Ok(Self {
                name: tz.iana_name().unwrap_or(name).into(),
                tz,
                last: AtomicU64::new(0),
            }),
            Err(_) => Err(Invalid::new(
                "invalid",
                "must be an IANA time zone name, such as Europe/Berlin or America/New_York",
            )
            .allowing(Self::names())),
        }
    }

    /// Every time zone name accepted.
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> = jiff::tz::db()
            .available()
            .map(|n| n.as_str().to_owned())
            .collect();
        names.sort();
        names
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The date in this zone at `unix_secs`, as `YYYY-MM-DD`.
    pub fn date(&self, unix_secs: i64) -> String {
        jiff::Timestamp::from_second(unix_secs)
            .map(|t| self.tz.to_datetime(t).date().to_string())
            .unwrap_or_default()
    }

    pub fn is_utc(&self) -> bool {
        &*self.name == "UTC"
    }

    fn offset_secs(&self, unix_secs: i64) -> i64 {
        match jiff::Timestamp::from_second(unix_secs) {
            Ok(t) => i64::from(self.tz.to_offset(t).seconds()),
            Err(_) => 0,
        }
    }

    /// The weekday and hour it is here at `unix_secs`.
    pub fn local(&self, unix_secs: i64) -> (Day, u8) {
        let quarter = u64::try_from(unix_secs.div_euclid(QUARTER_HOUR) + 1).unwrap_or(0);
        let last = self.last.load(Ordering::Relaxed);
        if quarter != 0 && last >> 8 == quarter {
            let day = Day::ALL[usize::from((last >> 5) as u8 & 7) % 7];
            return (day, (last & 31) as u8);
        }
        let offset = self.offset_secs(unix_secs);
        let local = unix_secs + offset;
        let hour = u8::try_from(local.rem_euclid(86_400) / 3600).unwrap_or(0);
        // 1970-01-01 was a Thursday.
        let weekday = usize::try_from((local.div_euclid(86_400) + 3).rem_euclid(7)).unwrap_or(0);
        if offset % QUARTER_HOUR == 0 && quarter != 0 {
            self.last.store(
                quarter << 8 | (weekday as u64) << 5 | u64::from(hour),
                Ordering::Relaxed,
            );
        }
        (Day::ALL[weekday], hour)
    }

    /// When the local hour after the one holding `unix_secs` begins (Unix seconds).
    pub fn next_hour(&self, unix_secs: i64) -> i64 {
        let local = unix_secs + self.offset_secs(unix_secs);
        unix_secs + 3600 - local.rem_euclid(3600)
    }

    /// The local day holding `unix_secs`: the Unix seconds of its midnight and of the next
    /// (23 or 25 hours later on the days clocks change).
    pub fn day(&self, unix_secs: i64) -> (i64, i64) {
        let start = |secs: i64| {
            let local = secs + self.offset_secs(secs);
            let midnight_local = local.div_euclid(86_400) * 86_400;
            // The offset at midnight itself, which differs from now's on a day clocks change.
            let guess = midnight_local - self.offset_secs(secs);
            midnight_local - self.offset_secs(guess)
        };
        let today = start(unix_secs);
        let tomorrow = start(today + 86_400 + 3 * 3600);
        (today, tomorrow.max(today + 3600))
    }
}

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// What a serve knows of its viewer: each part may be unknown, and an unknown part matches only
/// adverts that do not target by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Viewer {
    pub device: Option<Device>,
    pub country: Option<Country>,
}

/// An advert's targeting. Stored and shown as JSON with the keys that are set (`timezone` is
/// always shown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targeting {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<Country>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hours: Vec<u8>,
    #[serde(default)]
    pub timezone: Zone,
}

/// The keys of `targeting`.
pub const KEYS: [&str; 5] = ["devices", "countries", "days", "hours", "timezone"];

impl Targeting {
    /// Everyone, at any time, days in UTC.
    pub fn is_everyone(&self) -> bool {
        self.devices.is_empty()
            && self.countries.is_empty()
            && self.days.is_empty()
            && self.hours.is_empty()
            && self.timezone.is_utc()
    }

    /// Whether it narrows who or when at all (a time zone alone does not).
    pub fn narrows(&self) -> bool {
        !(self.devices.is_empty()
            && self.countries.is_empty()
            && self.days.is_empty()
            && self.hours.is_empty())
    }

    /// Reads the API's `targeting` object, naming each problem by its path
    /// (`targeting.countries[1]`). Lists are sorted and repeats dropped.
    pub fn from_json(value: &Value) -> Result<Self, Vec<(String, Invalid)>> {
        let Value::Object(map) = value else {
            return Err(vec![(
                "targeting".into(),
                Invalid::new("invalid_type", "must be an object"),
            )]);
        };
        let mut problems = Vec::new();
        let mut targeting = Self::default();
        for (key, value) in map {
            let field = format!("targeting.{key}");
            match key.as_str() {
                "devices" => {
                    targeting.devices =
                        list(&mut problems, &field, value, ItemType::Text, Device::parse);
                }
                "countries" => {
                    targeting.countries =
                        list(&mut problems, &field, value, ItemType::Text, Country::parse);
                }
                "days" => {
                    targeting.days = list(&mut problems, &field, value, ItemType::Text, Day::parse);
                }
                "hours" => {
                    targeting.hours =
                        list(&mut problems, &field, value, ItemType::Number, parse_hour);
                }
                "timezone" => match value {
                    Value::String(raw) => match Zone::parse(raw) {
                        Ok(zone) => targeting.timezone = zone,
                        Err(e) => problems.push((field, e)),
                    },
                    Value::Null => {}
                    _ => problems.push((field, Invalid::new("invalid_type", "must be a string"))),
                },
                _ => problems.push((
                    field,
                    Invalid::new("unknown_field", "is not a key of targeting")
                        .allowing(KEYS.map(str::to_owned).to_vec()),
                )),
            }
        }
        if problems.is_empty() {
            Ok(targeting)
        } else {
            Err(problems)
        }
    }

    /// The canonical JSON kept in the database; `None` for everyone (no targeting).
    pub fn to_stored(&self) -> Option<String> {
        (!self.is_everyone()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads what `to_stored` wrote.
    pub fn from_stored(raw: Option<&str>) -> Result<Self, String> {
        match raw {
            None => Ok(Self::default()),
            Some(raw) => serde_json::from_str(raw).map_err(|e| e.to_string()),
        }
    }

    /// The weekdays and hours it allows, without who.
    pub fn active_time(&self) -> ActiveTime {
        ActiveTime {
            days: self.days.iter().fold(0, |m, d| m | d.bit()),
            hours: self.hours.iter().fold(0, |m, h| m | 1 << h),
        }
    }

    /// The form serving checks on every request.
    pub fn audience(&self) -> Audience {
        Audience {
            devices: self.devices.iter().fold(0, |m, d| m | d.bit()),
            countries: self.countries.clone().into_boxed_slice(),
            days: self.days.iter().fold(0, |m, d| m | d.bit()),
            hours: self.hours.iter().fold(0, |m, h| m | 1 << h),
            zone: self.timezone.clone(),
        }
    }
}

/// What a list's items must be in JSON.
#[derive(Clone, Copy)]
enum ItemType {
    Text,
    Number,
}

/// An API list of values (sorted, without repeats): at least one, each checked, problems named
/// by index.
fn list<T: Ord>(
    problems: &mut Vec<(String, Invalid)>,
    field: &str,
    value: &Value,
    item_type: ItemType,
    parse: impl Fn(&str) -> Result<T, Invalid>,
) -> Vec<T> {
    let items = match value {
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => {
            problems.push((
                field.to_owned(),
                Invalid::new(
                    "required",
                    "must hold at least one value; leave the key out to target every one",
                ),
            ));
            return Vec::new();
        }
        Value::Null => return Vec::new(),
        _ => {
            problems.push((
                field.to_owned(),
                Invalid::new("invalid_type", "must be an array"),
            ));
            return Vec::new();
        }
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let text = match (item, item_type) {
            (Value::String(s), ItemType::Text) => s.clone(),
            (Value::Number(n), ItemType::Number) => n.to_string(),
            (_, ItemType::Text) => {
                problems.push((
                    format!("{field}[{i}]"),
                    Invalid::new("invalid_type", "must be a string"),
                ));
                continue;
            }
            (_, ItemType::Number) => {
                problems.push((
                    format!("{field}[{i}]"),
                    Invalid::new("invalid_type", "must be a number"),
                ));
                continue;
            }
        };
        match parse(&text) {
            Ok(v) => parsed.push(v),
            Err(e) => problems.push((format!("{field}[{i}]"), e)),
        }
    }
    parsed.sort();
    parsed.dedup();
    parsed
}

/// The weekdays and hours of a targeting, in the advert's time zone, as bit masks (0: any): the
/// advert's active time, over which even pacing spreads its caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveTime {
    days: u8,
    hours: u32,
}

impl ActiveTime {
    /// Every day, every hour.
    pub fn is_always(self) -> bool {
        self.days == 0 && self.hours == 0
    }

    /// Whether `unix_secs` is in a targeted day and hour of `zone`.
    pub fn admits(self, zone: &Zone, unix_secs: i64) -> bool {
        if self.is_always() {
            return true;
        }
        let (day, hour) = zone.local(unix_secs);
        (self.days == 0 || self.days & day.bit() != 0)
            && (self.hours == 0 || self.hours & (1 << hour) != 0)
    }
}

/// Targeting as serving checks it: bit masks (0: any) and a sorted list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    devices: u8,
    countries: Box<[Country]>,
    days: u8,
    hours: u32,
    zone: Zone,
}

impl Audience {
    /// Whether this viewer, at `unix_secs`, is one the advert is for.
    pub fn admits(&self, viewer: &Viewer, unix_secs: i64) -> bool {
        if self.devices != 0 && viewer.device.is_none_or(|d| self.devices & d.bit() == 0) {
            return false;
        }
        if !self.countries.is_empty()
            && viewer
                .country
                .is_none_or(|c| self.countries.binary_search(&c).is_err())
        {
            return false;
        }
        if self.days != 0 || self.hours != 0 {
            let (day, hour) = self.zone.local(unix_secs);
            if self.days != 0 && self.days & day.bit() == 0 {
                return false;
            }
            if self.hours != 0 && self.hours & (1 << hour) == 0 {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(rfc3339: &str) -> i64 {
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    fn targeting(value: Value) -> Targeting {
        Targeting::from_json(&value).unwrap()
    }

    #[test]
    fn every_assigned_country_code_and_only_those_is_accepted() {
        assert_eq!(Country::all().count(), 250);
        let mut codes: Vec<&str> = Country::all().collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 250, "no code twice");
        assert_eq!(Country::parse("de").unwrap().as_str(), "DE");
        assert!(
            Country::known(" DE").is_none(),
            "two letters, nothing around them"
        );
        for bad in ["XX", "T1", "UK", "D", "DEU", "", "ÄÖ"] {
            assert!(Country::known(bad).is_none(), "{bad}");
        }
        let err = Country::parse("UK").unwrap_err();
        assert_eq!(err.allowed.as_ref().map(Vec::len), Some(250));
    }

    #[test]
    fn local_hours_begin_where_the_zone_says_even_when_its_clocks_change() {
        let kolkata = Zone::parse("Asia/Kolkata").unwrap();
        // 10:10 UTC is 15:40 in Kolkata; 16:00 there is 10:30 UTC.
        assert_eq!(
            kolkata.next_hour(at("2026-12-03T10:10:00Z")),
            at("2026-12-03T10:30:00Z")
        );
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        // Clocks go back at 03:00 CEST (01:00 UTC): 02:00–03:00 comes twice.
        assert_eq!(
            berlin.next_hour(at("2026-10-25T00:30:00Z")),
            at("2026-10-25T01:00:00Z")
        );
        assert_eq!(
            berlin.next_hour(at("2026-10-25T01:00:00Z")),
            at("2026-10-25T02:00:00Z")
        );
    }

    #[test]
    fn active_time_is_the_targeted_days_and_hours_of_the_zone() {
        let always = Targeting::default().active_time();
        assert!(always.is_always());
        let evenings =
            targeting(json!({"days": ["thu"], "hours": [18, 19], "timezone": "Europe/Berlin"}));
        let active = evenings.active_time();
        assert!(!active.is_always());
        let zone = &evenings.timezone;
        // 2026-12-03 is a Thursday; Berlin is UTC+1.
        assert!(active.admits(zone, at("2026-12-03T17:00:00Z")));
        assert!(active.admits(zone, at("2026-12-03T18:59:59Z")));
        assert!(!active.admits(zone, at("2026-12-03T19:00:00Z")));
        assert!(!active.admits(zone, at("2026-12-03T16:59:59Z")));
        assert!(!active.admits(zone, at("2026-12-10T16:00:00Z")));
        assert!(active.admits(zone, at("2026-12-10T17:30:00Z")));
    }

    #[test]
    fn hours_read_as_runs() {
        assert_eq!(
            hour_runs(&[0, 1, 9, 10, 11, 20, 23]),
            [(0, 1), (9, 11), (20, 20), (23, 23)]
        );
        assert!(hour_runs(&[]).is_empty());
    }

    #[test]
    fn browsers_name_their_device_and_crawlers_none() {
        for (agent, device) in [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                Some(Device::Desktop),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15",
                Some(Device::Desktop),
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
                Some(Device::Desktop),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                Some(Device::Mobile),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
                Some(Device::Mobile),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
                Some(Device::Tablet),
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                Some(Device::Tablet),
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                None,
            ),
            ("", None),
            ("curl/8.5.0", None),
        ] {
            assert_eq!(Device::from_user_agent(agent), device, "{agent}");
        }
    }

    #[test]
    fn problems_are_named_by_path_and_index_with_the_allowed_values() {
        let problems = Targeting::from_json(&json!({
            "devices": ["mobile", "watch"],
            "countries": ["DE", "UK"],
            "days": [],
            "hours": [9, 24, "x"],
            "timezone": "Mars/Olympus",
            "ages": [18]
        }))
        .unwrap_err();
        let named: Vec<(&str, &str)> = problems.iter().map(|(f, e)| (f.as_str(), e.code)).collect();
        for expected in [
            ("targeting.devices[1]", "invalid"),
            ("targeting.countries[1]", "invalid"),
            ("targeting.days", "required"),
            ("targeting.hours[1]", "out_of_range"),
            ("targeting.hours[2]", "invalid_type"),
            ("targeting.timezone", "invalid"),
            ("targeting.ages", "unknown_field"),
        ] {
            assert!(named.contains(&expected), "{expected:?} in {named:?}");
        }
        let devices = &problems
            .iter()
            .find(|(f, _)| f == "targeting.devices[1]")
            .unwrap()
            .1;
        assert_eq!(
            devices.allowed.as_deref(),
            Some(&["desktop".to_owned(), "mobile".into(), "tablet".into()][..])
        );
        assert!(Targeting::from_json(&json!(["mobile"])).is_err());
    }

    #[test]
    fn lists_are_sorted_without_repeats_and_round_trip_through_storage() {
        let t = targeting(json!({
            "devices": ["tablet", "mobile", "mobile"],
            "countries": ["us", "DE"],
            "days": ["sun", "mon"],
            "hours": [23, 0, 23],
            "timezone": "europe/berlin"
        }));
        assert_eq!(t.devices, [Device::Mobile, Device::Tablet]);
        assert_eq!(t.hours, [0, 23]);
        assert_eq!(t.timezone.name(), "Europe/Berlin");
        let stored = t.to_stored().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&stored).unwrap(),
            json!({"devices": ["mobile", "tablet"], "countries": ["DE", "US"],
                   "days": ["mon", "sun"], "hours": [0, 23], "timezone": "Europe/Berlin"})
        );
        assert_eq!(Targeting::from_stored(Some(&stored)).unwrap(), t);
        assert_eq!(Targeting::default().to_stored(), None);
        assert!(Targeting::from_stored(None).unwrap().is_everyone());
        assert!(Targeting::from_stored(Some(r#"{"devices":["watch"]}"#)).is_err());
        // A time zone alone changes the day of the daily cap, so it is kept.
        let zone_only = targeting(json!({"timezone": "Asia/Tokyo"}));
        assert!(!zone_only.narrows());
        assert!(zone_only.to_stored().is_some());
    }

    #[test]
    fn an_unknown_device_or_country_matches_only_adverts_that_do_not_target_by_it() {
        let mobile_de = targeting(json!({"devices": ["mobile"], "countries": ["DE"]})).audience();
        let now = at("2026-12-03T12:00:00Z");
        let viewer = |device, country: Option<&str>| Viewer {
            device,
            country: country.and_then(Country::known),
        };
        assert!(mobile_de.admits(&viewer(Some(Device::Mobile), Some("de")), now));
        assert!(!mobile_de.admits(&viewer(Some(Device::Desktop), Some("DE")), now));
        assert!(!mobile_de.admits(&viewer(Some(Device::Mobile), Some("AT")), now));
        assert!(!mobile_de.admits(&viewer(None, Some("DE")), now));
        assert!(!mobile_de.admits(&viewer(Some(Device::Mobile), None), now));
        let everyone = Targeting::default().audience();
        assert!(everyone.admits(&Viewer::default(), now));
    }

    #[test]
    fn hours_and_weekdays_are_the_advert_time_zone_s_across_midnight() {
        // Friday late evening and the small hours of Friday, in New York (UTC-5 in December).
        let t =
            targeting(json!({"days": ["fri"], "hours": [23, 0], "timezone": "America/New_York"}))
                .audience();
        // Friday 23:30 in New York is Saturday 04:30 UTC.
        assert!(t.admits(&Viewer::default(), at("2026-12-05T04:30:00Z")));
        // Friday 00:30 in New York is Friday 05:30 UTC.
        assert!(t.admits(&Viewer::default(), at("2026-12-04T05:30:00Z")));
        // Saturday 00:30 there (Saturday 05:30 UTC) is another day; Friday 22:30 another hour.
        assert!(!t.admits(&Viewer::default(), at("2026-12-05T05:30:00Z")));
        assert!(!t.admits(&Viewer::default(), at("2026-12-05T03:30:00Z")));
        // The remembered quarter hour does not leak into the next one.
        assert!(t.admits(&Viewer::default(), at("2026-12-05T04:59:59Z")));
        assert!(!t.admits(&Viewer::default(), at("2026-12-05T05:00:00Z")));
        // Kathmandu is UTC+5:45: Monday 00:00 there is Sunday 18:15 UTC.
        let monday =
            targeting(json!({"days": ["mon"], "hours": [0], "timezone": "Asia/Kathmandu"}))
                .audience();
        assert!(!monday.admits(&Viewer::default(), at("2026-12-06T18:14:59Z")));
        assert!(monday.admits(&Viewer::default(), at("2026-12-06T18:15:00Z")));
        assert!(!monday.admits(&Viewer::default(), at("2026-12-06T19:15:00Z")));
    }

    #[test]
    fn a_local_day_is_23_or_25_hours_when_clocks_change() {
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        // 2026-03-29: clocks go forward at 02:00 local; the day starts at 23:00 UTC the day before.
        let (start, end) = berlin.day(at("2026-03-29T12:00:00Z"));
        assert_eq!(start, at("2026-03-28T23:00:00Z"));
        assert_eq!(end - start, 23 * 3600);
        let (start, end) = berlin.day(at("2026-10-25T12:00:00Z"));
        assert_eq!(start, at("2026-10-24T22:00:00Z"));
        assert_eq!(end - start, 25 * 3600);
        let utc = Zone::utc();
        assert_eq!(
            utc.day(at("2026-12-03T23:59:59Z")),
            (at("2026-12-03T00:00:00Z"), at("2026-12-04T00:00:00Z"))
        );
        // Just before local midnight it is still the old day.
        let tokyo = Zone::parse("Asia/Tokyo").unwrap();
        assert_eq!(
            tokyo.day(at("2026-12-03T14:59:59Z")).0,
            at("2026-12-02T15:00:00Z")
        );
        assert_eq!(
            tokyo.day(at("2026-12-03T15:00:00Z")).0,
            at("2026-12-03T15:00:00Z")
        );
    }
}
