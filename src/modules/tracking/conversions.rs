//! Conversions: what an advertiser reports back with the click id its landing page received
//! (`POST /api/v1/conversions`). One row per (click id, event), so a conversion reported twice
//! counts once; the click's facts are copied out of the id, so reports group without decoding.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use serde_json::{Map, Value};

use crate::domain::creative::CreativeId;
use crate::domain::{AdvertId, CustomerId};
use crate::platform::db::schema::conversions;
use crate::platform::db::{DbConnection, DbError, is_unique_violation};
use crate::platform::http::FieldError;

use super::clicks::Click;

/// The event of a conversion reported without one.
pub const DEFAULT_EVENT: &str = "conversion";
/// The longest event name.
const MAX_EVENT: usize = 64;
/// The largest value accepted (in the currency's units).
const MAX_VALUE: f64 = 1e12;

/// A conversion as reported, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub click_id: String,
    pub event: String,
    /// Millionths of the currency's unit.
    pub value_micros: Option<i64>,
    pub currency: Option<String>,
}

/// Reads the body of `POST /api/v1/conversions`: every problem at once, each naming its field.
pub fn parse(body: &[u8]) -> Result<Reported, Vec<FieldError>> {
    let object: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => object,
        _ => {
            return Err(vec![FieldError::new(
                "body",
                "invalid_json",
                "must be a JSON object such as {\"click_id\": \"...\"}",
            )]);
        }
    };
    let mut errors = Vec::new();
    let (mut click_id, mut event, mut value_micros, mut currency) = (None, None, None, None);
    for (key, value) in object {
        match (key.as_str(), value) {
            (_, Value::Null) if key != "click_id" => {}
            ("click_id", Value::String(id)) if !id.is_empty() => click_id = Some(id),
            ("click_id", _) => errors.push(FieldError::new(
                "click_id",
                "required",
                "must be the rk_click value the landing page received",
            )),
            ("event", Value::String(name)) => match event_name(&name) {
                Ok(()) => event = Some(name),
                Err(e) => errors.push(e),
            },
            ("value", Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && (0.0..=MAX_VALUE).contains(&v) => {
                    // Within ±1e18 by the bound above.
                    value_micros = Some((v * 1e6).round() as i64);
                }
                _ => errors.push(FieldError::new(
                    "value",
                    "out_of_range",
                    "must be a number from 0 to 1000000000000",
                )),
            },
            ("currency", Value::String(code))
                if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) =>
            {
                currency = Some(code);
            }
            ("currency", _) => errors.push(FieldError::new(
                "currency",
                "invalid",
                "must be an ISO 4217 code of three capital letters, such as EUR",
            )),
            ("event" | "value", _) => errors.push(FieldError::new(
                key.clone(),
                "invalid_type",
                if key == "event" {
                    "must be a string"
                } else {
                    "must be a number"
                },
            )),
            _ => {
                let mut error =
                    FieldError::new(key, "unknown_field", "is not a field of a conversion");
                error.allowed = Some(
                    ["click_id", "event", "value", "currency"]
                        .map(str::to_owned)
                        .to_vec(),
                );
                errors.push(error);
            }
        }
    }
    match click_id {
        Some(click_id) if errors.is_empty() => Ok(Reported {
            click_id,
            event: event.unwrap_or_else(|| DEFAULT_EVENT.to_owned()),
            value_micros,
            currency,
        }),
        None if !errors.iter().any(|e| e.field == "click_id") => {
            errors.insert(0, FieldError::new("click_id", "required", "is required"));
            Err(errors)
        }
        _ => Err(errors),
    }
}

fn event_name(name: &str) -> Result<(), FieldError> {
    let fine = (1..=MAX_EVENT).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if fine {
        Ok(())
    } else {
        Err(FieldError::new(
            "event",
            "invalid",
            "must be 1 to 64 letters, digits, '_', '-', '.' or ':' (such as purchase or \
             sign_up)",
        ))
    }
}

/// Stores a conversion; `false` when this (click id, event) was stored before (the first
/// report's value stands).
pub fn record(
    conn: &mut DbConnection,
    customer: CustomerId,
    click: &Click,
    reported: &Reported,
    now_secs: i64,
) -> Result<bool, DbError> {
    let inserted = diesel::insert_into(conversions::table)
        .values((
            conversions::click_id.eq(&reported.click_id),
            conversions::event.eq(&reported.event),
            conversions::customer_id.eq(customer.0),
            conversions::advert_id.eq(click.advert.0),
            conversions::placement.eq(click.placement.as_deref()),
            conversions::creative.eq(click
                .creative
                .map(|c| i32::try_from(c.0).unwrap_or(i32::MAX))),
            conversions::device.eq(click.viewer.device.map(|d| d.as_str())),
            conversions::country.eq(click.viewer.country.as_ref().map(|c| c.as_str())),
            conversions::clicked_at.eq(click.clicked_at),
            conversions::converted_at.eq(now_secs),
            conversions::value_micros.eq(reported.value_micros),
            conversions::currency.eq(reported.currency.as_deref()),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Conversions of one hour's clicks of one placement and creative.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ConvertedRow {
    /// The start of the UTC hour of the clicks.
    #[diesel(sql_type = BigInt)]
    pub bucket: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub placement: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub creative: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub device: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub country: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub conversions: i64,
    #[diesel(sql_type = BigInt)]
    pub value_micros: i64,
}

impl ConvertedRow {
    pub fn creative_id(&self) -> Option<CreativeId> {
        self.creative
            .and_then(|c| u32::try_from(c).ok())
            .map(CreativeId)
    }
}

/// An advert's conversions of clicks in `[from, to)`, per hour of the click, placement,
/// creative, device and country, sorted by hour.
pub fn hourly(
    conn: &mut DbConnection,
    advert: AdvertId,
    from: i64,
    to: i64,
) -> Result<Vec<ConvertedRow>, DbError> {
    // Only integers are spliced in.
    let sql = format!(
        "SELECT (clicked_at / 3600) * 3600 AS bucket, placement, creative, device, country, \
                COUNT(*) AS conversions, \
                CAST(COALESCE(SUM(value_micros), 0) AS BIGINT) AS value_micros \
         FROM conversions \
         WHERE advert_id = {} AND clicked_at >= {from} AND clicked_at < {to} \
         GROUP BY (clicked_at / 3600) * 3600, placement, creative, device, country \
         ORDER BY 1",
        advert.0
    );
    Ok(diesel::sql_query(sql).load(conn)?)
}

/// The currencies an advert's conversions of clicks in `[from, to)` were reported in, sorted.
pub fn currencies(
    conn: &mut DbConnection,
    advert: AdvertId,
    from: i64,
    to: i64,
) -> Result<Vec<String>, DbError> {
    Ok(conversions::table
        .filter(conversions::advert_id.eq(advert.0))
        .filter(conversions::clicked_at.ge(from))
        .filter(conversions::clicked_at.lt(to))
        .filter(conversions::currency.is_not_null())
        .select(conversions::currency.assume_not_null())
        .distinct()
        .order(conversions::currency)
        .load(conn)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<(String, &'static str)> {
        parse(body.as_bytes())
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn a_conversion_needs_only_its_click_id() {
        let got = parse(br#"{"click_id": "abc"}"#).unwrap();
        assert_eq!(got.event, "conversion");
        assert_eq!(got.value_micros, None);
        let got = parse(
            br#"{"click_id": "abc", "event": "purchase", "value": 19.99, "currency": "EUR"}"#,
        )
        .unwrap();
        assert_eq!(got.event, "purchase");
        assert_eq!(got.value_micros, Some(19_990_000));
        assert_eq!(got.currency.as_deref(), Some("EUR"));
        let got = parse(br#"{"click_id": "abc", "event": null, "value": null}"#).unwrap();
        assert_eq!(got.event, "conversion");
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        assert_eq!(fields("{}"), vec![("click_id".into(), "required")]);
        assert_eq!(fields("[1]"), vec![("body".into(), "invalid_json")]);
        assert_eq!(
            fields(r#"{"click_id": 5, "value": -1, "currency": "eur", "event": "a b", "x": 1}"#),
            vec![
                ("click_id".into(), "required"),
                ("currency".into(), "invalid"),
                ("event".into(), "invalid"),
                ("value".into(), "out_of_range"),
                ("x".into(), "unknown_field"),
            ]
        );
        assert_eq!(
            fields(r#"{"click_id": "a", "value": "12"}"#),
            vec![("value".into(), "invalid_type")]
        );
        assert_eq!(
            fields(&format!(
                r#"{{"click_id": "a", "event": "{}"}}"#,
                "e".repeat(65)
            )),
            vec![("event".into(), "invalid")]
        );
    }
}
