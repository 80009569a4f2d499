//! Who is asking, as far as a request's headers tell: the device from the User-Agent, the
//! country from the header the CDN or proxy in front sets (`serving.country_header`). Nothing of
//! the request's address is used or kept. Serving reads the viewer of a serve, tracking the one
//! of a click.

use std::cell::RefCell;

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderName};

use crate::domain::targeting::{Country, Device, Viewer};

/// User agents whose device a thread remembers; past this the memory starts over.
const DEVICES_KEPT: usize = 4096;
/// Longer user agents (no browser sends one) are parsed every time, so the memory stays small.
const REMEMBERED_UA_MAX: usize = 512;

thread_local! {
    // foldhash, for the reason `tracking::visitors` gives for its verdicts.
    static DEVICES: RefCell<foldhash::HashMap<Box<str>, Option<Device>>> =
        RefCell::new(foldhash::HashMap::default());
}

/// The device a User-Agent names. Parsing costs far more than a lookup and the agents a
/// frontend's users send repeat, so each thread remembers its recent verdicts.
pub fn device_of(user_agent: &str) -> Option<Device> {
    if user_agent.len() > REMEMBERED_UA_MAX {
        return Device::from_user_agent(user_agent);
    }
    DEVICES.with_borrow_mut(|known| {
        if let Some(&device) = known.get(user_agent) {
            return device;
        }
        let device = Device::from_user_agent(user_agent);
        if known.len() >= DEVICES_KEPT {
            known.clear();
        }
        known.insert(user_agent.into(), device);
        device
    })
}

/// The device of the request's User-Agent.
pub fn device(req: &HttpRequest) -> Option<Device> {
    req.headers()
        .get(header::USER_AGENT)
        .and_then(|ua| ua.to_str().ok())
        .and_then(device_of)
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
