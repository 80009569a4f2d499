//! Who is clicking: known bots and crawlers (counted apart, never billed), repeat clicks by the
//! same visitor within the duplicate window, and invalid traffic: clicks past a threshold of
//! billable clicks on one advert per hour from one address or one user, or with an expired
//! impression token. Visitors and addresses are identified by salted hashes that exist only in
//! this process's memory; no address is stored.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderName};

use crate::domain::AdvertId;
use crate::platform::client_addr::{self, TrustedProxies};
use crate::platform::viewers::{AgentMemo, header_text, remembered};
use crate::platform::window_counts::{WindowCounts, unix_now};

/// Link-preview fetchers and automation that the maintained list misses or matches too narrowly.
const EXTRA_BOT_PATTERNS: &[&str] = &[
    "telegrambot",
    r"whatsapp/",
    "discordbot",
    "slackbot",
    "skypeuripreview",
    "viber",
    "vkshare",
    "linkedinbot",
    "twitterbot",
    "headless",
    "yandexbot",
    "applebot",
    "petalbot",
    "bytespider",
    "gptbot",
    "python-requests",
    "go-http-client",
];

/// What a thread remembers of a User-Agent: whether it is a bot's, and its fingerprint (a
/// salted SipHash of its bytes), so that identifying a visitor hashes the address and eight
/// bytes rather than the agent's hundred and more on every click.
#[derive(Clone, Copy)]
struct Agent {
    bot: bool,
    fingerprint: u64,
}

thread_local! {
    // The patterns and the salt never change, so what is remembered holds for as long as it is.
    static AGENTS: AgentMemo<Agent> = AgentMemo::default();
}

/// The fingerprints' salt: one for the process, as the memo of fingerprints is per thread, not
/// per `Visitors`.
static AGENT_SALT: LazyLock<RandomState> = LazyLock::new(RandomState::new);

pub struct Visitors {
    bots: isbot::Bots,
    seen: Option<RecentClicks>,
    per_address: Option<WindowCounts>,
    per_user: Option<WindowCounts>,
    suspicious: SuspiciousClicks,
    salt: RandomState,
    proxies: TrustedProxies,
}

/// Suspicious clicks this instance has judged since it started, by reason (for `/metrics`).
#[derive(Debug, Default)]
pub struct SuspiciousClicks {
    pub expired_token: AtomicU64,
    pub address_threshold: AtomicU64,
    pub user_threshold: AtomicU64,
}

/// Billable clicks on one advert per UTC hour (0: no limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClickLimits {
    pub per_address_per_hour: u32,
    pub per_user_per_hour: u32,
}

/// How one click counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickKind {
    Billable,
    Bot,
    Duplicate,
    /// Past a threshold, or an expired token: redirected, never billed.
    Suspicious,
}

impl Visitors {
    pub fn new(duplicate_window: Duration, limits: ClickLimits, proxies: TrustedProxies) -> Self {
        let mut bots = isbot::Bots::default();
        bots.append(EXTRA_BOT_PATTERNS);
        let seen = (!duplicate_window.is_zero()).then(|| RecentClicks::new(duplicate_window));
        Self {
            bots,
            seen,
            per_address: WindowCounts::new(limits.per_address_per_hour, HOURLY_PAIRS_KEPT),
            per_user: WindowCounts::new(limits.per_user_per_hour, HOURLY_PAIRS_KEPT),
            suspicious: SuspiciousClicks::default(),
            salt: RandomState::new(),
            proxies,
        }
    }

    pub fn suspicious(&self) -> &SuspiciousClicks {
        &self.suspicious
    }

    /// What the User-Agent (the header's bytes) tells: whether it is a bot's (one that is not
    /// text counts as no user agent at all), and its fingerprint.
    fn agent(&self, user_agent: &[u8]) -> Agent {
        remembered(&AGENTS, user_agent, |ua| {
            let text = header_text(ua).unwrap_or_default();
            Agent {
                // No user agent at all is a script, not a person.
                bot: text.trim().is_empty() || self.bots.is_bot(text),
                fingerprint: AGENT_SALT.hash_one(ua),
            }
        })
    }

    /// A visitor without a genuine token: the address (unspecified when unknown) and the agent's
    /// fingerprint, salted, as one write (hashed as values, an `Option<IpAddr>` and a `u64` are
    /// five writes, each paying SipHash's overhead).
    fn visitor(&self, ip: Option<IpAddr>, fingerprint: u64) -> u64 {
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(&ip.map_or([0; 16], client_addr::octets));
        bytes[16..].copy_from_slice(&fingerprint.to_le_bytes());
        let mut hasher = self.salt.build_hasher();
        hasher.write(&bytes);
        hasher.finish()
    }

    /// Classifies a click on `advert`. `user` is the impression token's user, when the link
    /// carries a genuine token (it then identifies the visitor instead of address and user
    /// agent); `expired`, whether that token is past `serving.token_ttl_secs`. In this order: a
    /// bot, a repeat within the duplicate window, an expired token, a click past the address's
    /// or the user's hourly threshold; else billable.
    pub fn classify(
        &self,
        req: &HttpRequest,
        advert: AdvertId,
        user: Option<u64>,
        expired: bool,
    ) -> ClickKind {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .map_or(&b""[..], |v| v.as_bytes());
        let agent = self.agent(user_agent);
        if agent.bot {
            return ClickKind::Bot;
        }
        let ip = self
            .proxies
            .client_ip(req.peer_addr().map(|a| a.ip()), req.headers());
        if let Some(seen) = &self.seen {
            let visitor = user.unwrap_or_else(|| self.visitor(ip, agent.fingerprint));
            if !seen.first_within_window((advert, visitor)) {
                return ClickKind::Duplicate;
            }
        }
        if expired {
            self.suspicious.expired_token.fetch_add(1, Relaxed);
            return ClickKind::Suspicious;
        }
        if self.per_address.is_none() && self.per_user.is_none() {
            return ClickKind::Billable;
        }
        let hour = unix_now() / 3600;
        let advert = advert.0.cast_unsigned();
        let address = ip.map(|ip| client_addr::block_key(&self.salt, ip));
        let address_counted = match (&self.per_address, address) {
            (Some(limit), Some(address)) => {
                if !limit.admit(hour, (advert, address)) {
                    self.suspicious.address_threshold.fetch_add(1, Relaxed);
                    return ClickKind::Suspicious;
                }
                true
            }
            _ => false,
        };
        if let (Some(limit), Some(user)) = (&self.per_user, user)
            && !limit.admit(hour, (advert, user))
        {
            // Not billable after all: it does not spend the address's allowance.
            if let (true, Some(per_address), Some(address)) =
                (address_counted, &self.per_address, address)
            {
                per_address.give_back(hour, (advert, address));
            }
            self.suspicious.user_threshold.fetch_add(1, Relaxed);
            return ClickKind::Suspicious;
        }
        ClickKind::Billable
    }
}

/// (advert, identity) pairs counted per hour at most, per threshold: past it a new pair is
/// billable without being counted (a flood of made-up identities cannot grow memory).
const HOURLY_PAIRS_KEPT: usize = 1_000_000;

/// Pairs (advert, visitor) kept at most, like a bounded cache: past it a click is billable
/// without being remembered.
const RECENT_CLICKS_KEPT: usize = 2_000_000;
const RECENT_SHARDS: usize = 16;

/// The (advert, visitor) pairs clicked within the duplicate window, each with the moment of its
/// first click. A plain map per shard: about 30 bytes a pair, where a cache entry with its own
/// bookkeeping costs several hundred, and every click of a large catalogue adds one.
struct RecentClicks {
    window_ms: u64,
    started: Instant,
    shards: Vec<Mutex<RecentShard>>,
}

#[derive(Default)]
struct RecentShard {
    /// foldhash: the visitor is already a salted hash, and this is looked up on every click.
    first_click_ms: foldhash::HashMap<(AdvertId, u64), u64>,
    /// Expired pairs are swept when the shard reaches this size (then twice its live size), so a
    /// sweep's cost is spread over the clicks that filled it.
    sweep_at: usize,
}

impl RecentClicks {
    fn new(window: Duration) -> Self {
        Self {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            started: Instant::now(),
            shards: (0..RECENT_SHARDS)
                .map(|_| Mutex::new(RecentShard::default()))
                .collect(),
        }
    }

    /// Whether this is the pair's first click within the window; remembers it if so.
    fn first_within_window(&self, pair: (AdvertId, u64)) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The visitor part is a hash already: its low bits pick the shard evenly.
        let index = (pair.1 ^ pair.0.0.unsigned_abs()) as usize % RECENT_SHARDS;
        let mut shard = self.shards[index].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&first) = shard.first_click_ms.get(&pair)
            && now.saturating_sub(first) < self.window_ms
        {
            return false;
        }
        if shard.first_click_ms.len() >= shard.sweep_at {
            let window = self.window_ms;
            shard
                .first_click_ms
                .retain(|_, first| now.saturating_sub(*first) < window);
            shard.sweep_at = (shard.first_click_ms.len() * 2).max(1024);
        }
        if shard.first_click_ms.len() < RECENT_CLICKS_KEPT / RECENT_SHARDS
            || shard.first_click_ms.contains_key(&pair)
        {
            shard.first_click_ms.insert(pair, now);
        }
        true
    }
}

/// The headers a browser marks its own prefetches and previews with. Named once: looking a
/// header up by a `&str` name parses the name and copies it (none of these is a standard header)
/// on every call, four times on every redirect.
static PREFETCH_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("sec-purpose"),
    HeaderName::from_static("purpose"),
    HeaderName::from_static("x-purpose"),
    HeaderName::from_static("x-moz"),
];

/// Prefetches and previews fetched by the browser itself are not clicks.
pub fn is_prefetch(req: &HttpRequest) -> bool {
    let headers = req.headers();
    PREFETCH_HEADERS.iter().any(|name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("prefetch") || v.contains("preview"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_fresh_once_per_window_and_expired_pairs_are_swept() {
        let recent = RecentClicks::new(Duration::from_secs(1));
        let pair = (AdvertId(7), 42);
        assert!(recent.first_within_window(pair));
        assert!(!recent.first_within_window(pair));
        assert!(
            recent.first_within_window((AdvertId(7), 43)),
            "another visitor"
        );
        assert!(
            recent.first_within_window((AdvertId(8), 42)),
            "another link"
        );
        for visitor in 0..5_000 {
            assert!(recent.first_within_window((AdvertId(1), visitor)));
        }
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(recent.first_within_window(pair), "the window has passed");
        assert!(!recent.first_within_window(pair));
        // Enough new pairs (well within a window) to reach every shard's sweep point: the 5 002
        // expired pairs go, the fresh ones stay.
        for visitor in 10_000..40_000 {
            assert!(recent.first_within_window((AdvertId(2), visitor)));
        }
        let kept: usize = recent
            .shards
            .iter()
            .map(|s| s.lock().map(|s| s.first_click_ms.len()).unwrap_or(0))
            .sum();
        assert!((30_001..=30_003).contains(&kept), "{kept} pairs kept");
    }

    /// A ten-second duplicate window, no hourly thresholds, no trusted proxies.
    fn ten_second_window() -> Visitors {
        Visitors::new(
            Duration::from_secs(10),
            ClickLimits::default(),
            TrustedProxies::default(),
        )
    }

    #[test]
    fn crawlers_and_preview_fetchers_are_bots_and_browsers_are_not() {
        let visitors = ten_second_window();
        for bot in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "TelegramBot (like TwitterBot)",
            "WhatsApp/2.23.20.0",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
            "curl/8.5.0",
            "",
        ] {
            assert!(visitors.agent(bot.as_bytes()).bot, "{bot}");
        }
        for person in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 YaBrowser/24.10",
        ] {
            assert!(!visitors.agent(person.as_bytes()).bot, "{person}");
            // The same agent with a byte no header text has is no user agent at all.
            let garbled = [person.as_bytes(), b"\xff"].concat();
            assert!(visitors.agent(&garbled).bot, "{person} garbled");
        }
    }

    #[test]
    fn a_visitor_is_the_address_and_the_user_agent_together() {
        let visitors = ten_second_window();
        let browser = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        // Longer than any agent a thread remembers: its fingerprint is taken afresh each time.
        let long = format!("{browser} {}", "x".repeat(600));
        let click = |address: [u8; 4], agent: &str| {
            let req = actix_web::test::TestRequest::default()
                .peer_addr((address, 40_000).into())
                .insert_header((header::USER_AGENT, agent))
                .to_http_request();
            visitors.classify(&req, AdvertId(1), None, false)
        };
        let (home, office) = ([192, 0, 2, 1], [198, 51, 100, 1]);
        for agent in [browser, long.as_str()] {
            assert_eq!(click(home, agent), ClickKind::Billable, "{agent}");
            assert_eq!(click(home, agent), ClickKind::Duplicate, "{agent}");
            assert_eq!(click(office, agent), ClickKind::Billable, "{agent}");
            assert_eq!(click(office, agent), ClickKind::Duplicate, "{agent}");
        }
        assert_eq!(
            visitors.agent(browser.as_bytes()).fingerprint,
            visitors.agent(browser.as_bytes()).fingerprint
        );
        assert_ne!(
            visitors.agent(browser.as_bytes()).fingerprint,
            visitors.agent(long.as_bytes()).fingerprint
        );
    }
}
