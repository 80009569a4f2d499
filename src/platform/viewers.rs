//! Who is asking, as far as a request's headers tell: the device from the User-Agent, the
//! country from the header the CDN or proxy in front sets (`serving.country_header`). Nothing of
//! the request's address is used or kept. Serving reads the viewer of a serve, tracking the one
//! of a click.

use std::cell::RefCell;
use std::thread::LocalKey;

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderName};

use crate::domain::targeting::{Country, Device, Viewer};

/// User agents a thread remembers in one memo; past this the memory starts over.
const AGENTS_KEPT: usize = 4096;
/// Longer user agents (no browser sends one) are looked at every time, so the memory stays small.
const REMEMBERED_UA_MAX: usize = 512;

/// A thread's memo of what User-Agents (the headers' bytes) tell. foldhash: a browser's agent
/// is 100–150 bytes, which SipHash takes about ten times as long to hash; the seed is random and
/// the memo bounded, so a crafted agent gains nothing.
pub type AgentMemo<T> = RefCell<foldhash::HashMap<Box<[u8]>, T>>;

/// What `judge` says of `user_agent`, from `memo` when this thread has asked before. Judging an
/// agent (parsing it, matching patterns) costs far more than a lookup, and the agents a service
/// sees repeat.
pub fn remembered<T: Copy>(
    memo: &'static LocalKey<AgentMemo<T>>,
    user_agent: &[u8],
    judge: impl FnOnce(&[u8]) -> T,
) -> T {
    if user_agent.len() > REMEMBERED_UA_MAX {
        return judge(user_agent);
    }
    memo.with_borrow_mut(|known| {
        if let Some(&seen) = known.get(user_agent) {
            return seen;
        }
        let verdict = judge(user_agent);
        if known.len() >= AGENTS_KEPT {
            known.clear();
        }
        known.insert(user_agent.into(), verdict);
        verdict
    })
}

thread_local! {
    static DEVICES: AgentMemo<Option<Device>> = AgentMemo::default();
}

/// A header value as text, by `HeaderValue::to_str`'s rule (visible ASCII and tabs), from its
/// bytes. The memos are keyed by the bytes, so a repeated header is not checked again.
pub fn header_text(bytes: &[u8]) -> Option<&str> {
    bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(bytes).ok())
        .flatten()
}

/// The device a User-Agent (the header's bytes) names; none for a header that is not text.
pub fn device_of(user_agent: &[u8]) -> Option<Device> {
    remembered(&DEVICES, user_agent, |ua| {
        header_text(ua).and_then(Device::from_user_agent)
    })
}

/// The device of the request's User-Agent.
pub fn device(req: &HttpRequest) -> Option<Device> {
    req.headers()
        .get(header::USER_AGENT)
        .and_then(|ua| device_of(ua.as_bytes()))
}

/// The country in `country_header` (none configured: unknown).
pub fn country(req: &HttpRequest, country_header: Option<&HeaderName>) -> Option<Country> {
    country_header
        .and_then(|name| req.headers().get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(Country::known)
}

/// The viewer the request's headers describe.
pub fn from_headers(req: &HttpRequest, country_header: Option<&HeaderName>) -> Viewer {
    Viewer {
        device: device(req),
        country: country(req, country_header),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    #[test]
    fn header_text_follows_the_header_value_s_own_rule() {
        for b in 0..=u8::MAX {
            let bytes = [b'a', b, b'z'];
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                assert_eq!(header_text(&bytes), value.to_str().ok(), "byte {b:#04x}");
            }
        }
        assert_eq!(header_text("café".as_bytes()), None);
    }

    #[test]
    fn a_user_agent_that_is_not_text_names_no_device_whatever_it_resembles() {
        let phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                     (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(device_of(phone.as_bytes()), Some(Device::Mobile));
        // Asked twice: the second answer is the remembered one.
        assert_eq!(device_of(phone.as_bytes()), Some(Device::Mobile));
        let garbled = [phone.as_bytes(), b"\xff"].concat();
        assert_eq!(device_of(&garbled), None);
        assert_eq!(device_of(&garbled), None);
    }
}
