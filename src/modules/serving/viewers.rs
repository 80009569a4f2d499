//! Who is asking a serve: the `device` and `country` parameters when given, else what the
//! request's headers say (`platform::viewers`).

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;

use crate::domain::targeting::{Country, Device, Viewer};
use crate::platform::http::FieldError;
use crate::platform::viewers;

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
            .map_err(|e| errors.push(FieldError::invalid("device", e)))
            .ok(),
        None => viewers::device(req),
    };
    let country = match given(country) {
        Some(raw) => Country::parse(raw)
            .map_err(|e| errors.push(FieldError::invalid("country", e)))
            .ok(),
        None => viewers::country(req, country_header),
    };
    Viewer { device, country }
}

/// A parameter that was given: blank is the same as left out.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}
