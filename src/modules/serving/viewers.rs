//! Who is asking, as far as a serve can tell: the device from the `device` parameter or the
//! User-Agent, the country from the `country` parameter or the header the CDN in front sets
//! (`serving.country_header`). Nothing of the request's address is used or kept.

use std::cell::RefCell;
use std::collections::HashMap;

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderName};

use crate::domain::targeting::{Country, Device, Viewer};
use crate::platform::http::FieldError;

/// User agents whose device a thread remembers; past this the memory starts over.
const DEVICES_KEPT: usize = 4096;
/// Longer user agents (no browser sends one) are parsed every time, so the memory stays small.
const REMEMBERED_UA_MAX: usize = 512;

thread_local! {
    static DEVICES: RefCell<HashMap<Box<str>, Option<Device>>> = RefCell::new(HashMap::new());
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

/// The viewer of a serve: the parameters when given (a bad one is a field error), else what
/// the request's headers say.
pub fn viewer(
    req: &HttpRequest,
    device: Option<&str>,
    country: Option<&str>,
    country_header: Option<&HeaderName>,
    errors: &mut Vec<FieldError>,
) -> Viewer {
    let device = match given(device) {
        Some(raw) => Device::parse(raw)
            .map_err(|e| errors.push(field_error("device", e)))
            .ok(),
        None => req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|ua| ua.to_str().ok())
            .and_then(device_of),
    };
    let country = match given(country) {
        Some(raw) => Country::parse(raw)
            .map_err(|e| errors.push(field_error("country", e)))
            .ok(),
        None => country_header
            .and_then(|name| req.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .and_then(Country::known),
    };
    Viewer { device, country }
}

/// A parameter that was given: blank is the same as left out.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn field_error(field: &str, invalid: crate::domain::advert::Invalid) -> FieldError {
    let mut error = FieldError::new(field, invalid.code, invalid.message);
    error.allowed = invalid.allowed;
    error
}
