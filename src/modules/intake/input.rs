//! Reading an advert submission, from JSON or multipart/form-data, into raw fields, and
//! validating them all at once so the customer sees every problem in one answer.

use base64::Engine;
use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::advert::{
    AdvertPatch, AdvertText, CallToAction, DeliveryCaps, Invalid, Lang, Pacing, Title, WEIGHT_RANGE,
};
use crate::domain::creative::{MAX_ALTERNATIVES, MAX_IMAGES};
use crate::domain::targeting::{Day, Device, Targeting};
use crate::domain::{AdvertStatus, Genre, NewAdvert, TargetUrl};
use crate::platform::http::FieldError;

use super::error::IntakeError;

/// Text fields larger than this are refused before validation looks at them.
const MAX_TEXT_FIELD_BYTES: usize = 16 * 1024;
/// A form has a dozen fields; a body with many more parts is not a form.
const MAX_PARTS: usize = 64;

/// `POST /api/v1/adverts` with a JSON body, for the OpenAPI document only: the body is read
/// field by field by [`RawAdvert::from_json`], which this mirrors (the unit test below keeps the
/// two in step). Numeric fields take a number or its decimal string; `null` is the same as
/// leaving a field out; any other field is refused (`unknown_field`).
#[derive(utoipa::ToSchema)]
#[schema(
    description = "A new advert as JSON. Numeric fields take a number or its decimal string; \
                   `null` is the same as leaving a field out; any other field is refused \
                   (`unknown_field`).",
    example = json!({
    "title": "Summer in Sochi",
    "text": "Seven nights by the sea",
    "genre": "travel",
    "target_url": "https://example.com/sochi",
    "image_base64": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC",
    "lang": "ru",
    "weight": 10,
    "starts_at": "2026-12-01T00:00:00Z",
    "ends_at": "2027-01-01T00:00:00Z",
    "max_impressions": 100000
}))]
#[expect(dead_code, reason = "documentation only, never built")]
pub struct AdvertInput {
    /// One line, trimmed, no control characters. Required unless `titles` is given.
    #[schema(min_length = 1, max_length = 90)]
    title: Option<String>,
    /// Trimmed; line breaks allowed. Required unless `texts` is given.
    #[schema(min_length = 1, max_length = 500)]
    text: Option<String>,
    /// A responsive advert, instead of `title`: 1 to 5 titles, each checked as `title` (a problem
    /// names its index, `titles[2]`). Every combination of title and text is a creative; serving
    /// learns which wins (see `GET /api/v1/adverts/{id}/creatives`).
    #[schema(min_items = 1, max_items = 5, example = json!(["Summer in Sochi", "Sochi from 99 EUR"]))]
    titles: Option<Vec<String>>,
    /// Instead of `text`: 1 to 5 texts, each checked as `text`.
    #[schema(min_items = 1, max_items = 5)]
    texts: Option<Vec<String>>,
    genre: Genre,
    /// An absolute http(s) URL with a host, checked on the raw text and stored byte for byte: no
    /// control characters, spaces, backslashes or user info.
    #[schema(
        format = "uri",
        max_length = 2048,
        example = "https://example.com/sochi"
    )]
    target_url: String,
    /// The image, base64 (a `data:image/...;base64,` URL is accepted): JPEG, PNG, WebP or GIF, at
    /// most `intake.max_image_bytes` (10 MiB) decoded, at most 12 000 px a side and 40 Mpx.
    /// Required unless `images_base64` is given.
    #[schema(content_encoding = "base64")]
    image_base64: Option<String>,
    /// A responsive advert's images, 1 to 3, each as `image_base64`, instead of it: each image
    /// combines with every title and text into creatives. Problems are named by index
    /// (`images_base64[1]`).
    #[schema(min_items = 1, max_items = 3)]
    images_base64: Option<Vec<String>>,
    /// A two-letter ISO 639-1 code; without it the advert is shown whatever the language asked.
    #[schema(pattern = "^[A-Za-z]{2}$", example = "ru")]
    lang: Option<String>,
    /// The call to action on composed creatives' button, e.g. "Book now": one line, trimmed.
    /// Left out, it is the usual words for `lang` ("Learn more", "Подробнее", ...).
    #[schema(min_length = 1, max_length = 24, example = "Book now")]
    cta: Option<String>,
    /// Relative share in the rotation; 1 when left out.
    #[schema(minimum = 1, maximum = 1000)]
    weight: Option<u32>,
    /// Not served before this time (RFC 3339).
    starts_at: Option<OffsetDateTime>,
    /// Not served from this time on (RFC 3339); later than `starts_at`.
    ends_at: Option<OffsetDateTime>,
    /// Stop serving after this many impressions in all.
    #[schema(minimum = 1)]
    max_impressions: Option<u64>,
    /// Stop serving after this many billable clicks.
    #[schema(minimum = 1)]
    max_clicks: Option<u64>,
    /// At most this many impressions per day: the day of `targeting.timezone` (UTC without one).
    #[schema(minimum = 1)]
    daily_max_impressions: Option<u64>,
    /// How the impression caps are spent. `asap` (the default): served while under them.
    /// `even`: `daily_max_impressions` is spread over each day's active hours (those of
    /// `targeting` within `starts_at`…`ends_at`), and `max_impressions` over the whole flight
    /// when both `starts_at` and `ends_at` are set, so delivery follows the pro-rata line and a
    /// burst of traffic gets only what is due. Without an impression cap it changes nothing.
    pacing: Option<Pacing>,
    /// Who and when the advert is shown to; left out, everyone at any time.
    targeting: Option<TargetingInput>,
    /// Append a signed click id (`rk_click`) to the target on every redirect, for reporting
    /// conversions with `POST /api/v1/conversions`; off when left out. Forms send `true`,
    /// `on` or `1` (a checkbox).
    conversion_tracking: Option<bool>,
}

/// An advert's `targeting`, for the OpenAPI document only: read by `Targeting::from_json`.
#[derive(utoipa::ToSchema)]
#[schema(
    as = Targeting,
    description = "Who and when an advert is shown to. Every key is optional and narrows it: a \
                   list must hold at least one value (leave the key out to allow every one); \
                   repeats are dropped and lists come back sorted. Days and hours combine: \
                   `days: [\"fri\"]` with `hours: [23, 0]` is Friday 23:00–24:00 and Friday \
                   00:00–01:00 in `timezone`. A problem names its key and index \
                   (`targeting.countries[1]`), with the `allowed` values.",
    example = json!({"devices": ["mobile", "tablet"], "countries": ["DE", "AT"], "days": ["sat", "sun"], "hours": [9, 10, 11, 12], "timezone": "Europe/Berlin"})
)]
#[expect(dead_code, reason = "documentation only, never built")]
pub struct TargetingInput {
    /// Only these devices, as the serve's `device` parameter or the User-Agent names them; a
    /// viewer whose device is unknown does not see the advert.
    #[schema(min_items = 1, example = json!(["mobile"]))]
    devices: Option<Vec<Device>>,
    /// Described by [`country_codes`].
    #[schema(schema_with = country_codes)]
    countries: Option<Vec<String>>,
    /// Only on these weekdays of `timezone`.
    #[schema(min_items = 1)]
    days: Option<Vec<Day>>,
    /// Described by [`hours_of_the_day`].
    #[schema(schema_with = hours_of_the_day)]
    hours: Option<Vec<u8>>,
    /// An IANA time zone name (`Europe/Berlin`); `UTC` when left out. It is the day and hour of
    /// `days`, `hours` and `daily_max_impressions`. Always shown in answers.
    #[schema(example = "Europe/Berlin")]
    timezone: Option<String>,
}

/// A targeting list's type: `null` is the same as leaving the key out, as for every key.
fn nullable_array() -> utoipa::openapi::schema::SchemaType {
    use utoipa::openapi::schema::{SchemaType, Type};
    SchemaType::from_iter([Type::Array, Type::Null])
}

/// `targeting.countries` in the OpenAPI document: two letters each.
fn country_codes() -> utoipa::openapi::Array {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, schema::Type};
    ArrayBuilder::new()
        .schema_type(nullable_array())
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z]{2}$")),
        )
        .min_items(Some(1))
        .description(Some(
            "Only viewers in these countries (ISO 3166-1 alpha-2, either case; stored upper \
             case), as the serve's `country` parameter or `serving.country_header` names them; a \
             viewer whose country is unknown does not see the advert.",
        ))
        .examples(Some(serde_json::json!(["DE", "AT"])))
        .build()
}

/// `targeting.hours` in the OpenAPI document: 0 to 23 each.
fn hours_of_the_day() -> utoipa::openapi::Array {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, schema::Type};
    ArrayBuilder::new()
        .schema_type(nullable_array())
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(23)),
        )
        .min_items(Some(1))
        .description(Some(
            "Only in these hours of `timezone` (0 to 23; 9 is 09:00–10:00).",
        ))
        .examples(Some(serde_json::json!([9, 10, 11, 12])))
        .build()
}

/// `POST /api/v1/adverts` and the HTML form's `POST /adverts` as multipart/form-data, for the
/// OpenAPI document only (read by [`RawAdvert::read_multipart`]). Every part is text except
/// `image`; blank parts count as left out and unknown parts are ignored.
#[derive(utoipa::ToSchema)]
#[schema(
    description = "A new advert as multipart/form-data: the same fields as JSON, as text parts, \
                   and the image as a file part `image` (or a text part `image_base64`). Blank \
                   parts count as left out; unknown parts are ignored."
)]
#[expect(dead_code, reason = "documentation only, never built")]
pub struct AdvertUpload {
    /// Repeat the part (or send `titles` parts) for a responsive advert's 1 to 5 titles.
    #[schema(min_length = 1, max_length = 90)]
    title: String,
    /// Repeat the part (or send `texts` parts) for 1 to 5 texts.
    #[schema(min_length = 1, max_length = 500)]
    text: String,
    /// One title per part, as repeated `title` parts.
    titles: Option<Vec<String>>,
    /// One text per part, as repeated `text` parts.
    texts: Option<Vec<String>>,
    genre: Genre,
    #[schema(format = "uri", max_length = 2048)]
    target_url: String,
    /// The image file (JPEG, PNG, WebP or GIF); alternatively a text part `image_base64`. Up to
    /// 3 `image` parts make a responsive advert's images (problems named `image[1]`).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    image: Vec<u8>,
    /// The image as base64 text, instead of `image` (repeated, as `image` can be).
    #[schema(content_encoding = "base64")]
    image_base64: Option<String>,
    /// As in JSON; a blank part is left out (so for every optional part below).
    #[schema(pattern = "^\\s*([A-Za-z]{2})?\\s*$")]
    lang: Option<String>,
    /// As in JSON.
    #[schema(max_length = 24)]
    cta: Option<String>,
    /// 1 to 1000, as decimal text.
    #[schema(pattern = "^\\s*([0-9]+)?\\s*$")]
    weight: Option<String>,
    /// RFC 3339, as in JSON.
    starts_at: Option<String>,
    /// RFC 3339, later than `starts_at`.
    ends_at: Option<String>,
    /// At least 1, as decimal text.
    #[schema(pattern = "^\\s*([0-9]+)?\\s*$")]
    max_impressions: Option<String>,
    /// At least 1, as decimal text.
    #[schema(pattern = "^\\s*([0-9]+)?\\s*$")]
    max_clicks: Option<String>,
    /// At least 1, as decimal text.
    #[schema(pattern = "^\\s*([0-9]+)?\\s*$")]
    daily_max_impressions: Option<String>,
    /// `asap` or `even`, as in JSON.
    pacing: Option<Pacing>,
    /// `targeting.devices`: one or more devices, separated by commas or spaces; repeated parts
    /// add to the list (checkboxes).
    #[schema(rename = "targeting.devices")]
    targeting_devices: Option<Vec<String>>,
    /// `targeting.countries`: country codes separated by commas or spaces.
    #[schema(rename = "targeting.countries", example = "DE, AT")]
    targeting_countries: Option<Vec<String>>,
    /// `targeting.days`: `mon` to `sun`, separated by commas or spaces, or repeated parts.
    #[schema(rename = "targeting.days")]
    targeting_days: Option<Vec<String>>,
    /// `targeting.hours`: hours and ranges of hours, separated by commas or spaces (`9-17, 20`;
    /// `22-2` wraps past midnight).
    #[schema(rename = "targeting.hours", example = "9-17, 20")]
    targeting_hours: Option<Vec<String>>,
    /// `targeting.timezone`: an IANA time zone name.
    #[schema(rename = "targeting.timezone", example = "Europe/Berlin")]
    targeting_timezone: Option<String>,
    /// `true`, `on` or `1` turns conversion tracking on (a checkbox); `false`, `off` or `0`
    /// leaves it off.
    #[schema(pattern = "^\\s*(true|false|on|off|1|0)?\\s*$")]
    conversion_tracking: Option<String>,
    /// The HTML form (`POST /adverts`) only, where it is required: the customer's API key.
    /// `POST /api/v1/adverts` ignores it and reads `Authorization: Bearer` instead.
    #[schema(example = "rk_1_...")]
    api_key: Option<String>,
}

/// `PATCH /api/v1/adverts/{id}`, for the OpenAPI document only: the body is read by
/// [`parse_patch`], which this mirrors (see [`PATCHABLE`] and the unit test below). Every field is
/// optional; a field left out stays as it is, `null` clears the ones that may be empty.
#[derive(utoipa::ToSchema)]
#[schema(
    description = "A change to an advert. Every field is optional: a field left out stays as it \
                   is, `null` clears the ones that may be empty; any other field is refused \
                   (`unknown_field`, with the `allowed` ones). A new `title`, `text`, `cta` or \
                   `image_base64` is checked as on creation and renders the placement variants \
                   again: until then `GET /api/v1/adverts/{id}/variants` shows them `pending` and \
                   placements do not serve the advert.",
    example = json!({"title": "Winter in Sochi", "status": "paused", "weight": 50, "ends_at": null})
)]
#[expect(dead_code, reason = "documentation only, never built")]
pub struct AdvertPatchInput {
    /// One line, trimmed, no control characters; cannot be `null`.
    #[schema(min_length = 1, max_length = 90, required = false)]
    title: String,
    /// Trimmed; line breaks allowed; cannot be `null`.
    #[schema(min_length = 1, max_length = 500, required = false)]
    text: String,
    /// Replaces every title with these 1 to 5 (`title` replaces them with one); not with `title`.
    /// Creatives whose title is no longer on the advert are retired; the others keep their
    /// numbers, statuses and counts.
    #[schema(min_items = 1, max_items = 5, required = false)]
    titles: Vec<String>,
    /// Replaces every text with these 1 to 5; not with `text`.
    #[schema(min_items = 1, max_items = 5, required = false)]
    texts: Vec<String>,
    /// The call to action, checked as on creation; `null` goes back to the default for the
    /// advert's language. Renders the composed variants again.
    #[schema(min_length = 1, max_length = 24, required = false)]
    cta: Option<String>,
    /// A new image, base64 (a `data:image/...;base64,` URL is accepted), with the same formats
    /// and limits as on creation; cannot be `null`. It replaces every image of the advert and
    /// the original: the advert gets a new `image_url`, the old ones answer 404, and the cloud
    /// copy follows.
    #[schema(content_encoding = "base64", required = false)]
    image_base64: String,
    /// New images, 1 to 3, each as `image_base64`: they replace every image of the advert.
    /// Creatives keep their numbers by position (image, title, text); those of an image no
    /// longer there are retired.
    #[schema(min_items = 1, max_items = 3, required = false)]
    images_base64: Vec<String>,
    /// `active` or `paused`; cannot be `null`.
    #[schema(schema_with = AdvertStatus::settable_schema, required = false)]
    status: String,
    /// Cannot be `null`.
    #[schema(minimum = 1, maximum = 1000, required = false)]
    weight: u32,
    /// `null` removes the start.
    #[schema(required = false)]
    starts_at: Option<OffsetDateTime>,
    /// `null` removes the end.
    #[schema(required = false)]
    ends_at: Option<OffsetDateTime>,
    /// `null` removes the cap.
    #[schema(minimum = 1, required = false)]
    max_impressions: Option<u64>,
    /// `null` removes the cap.
    #[schema(minimum = 1, required = false)]
    max_clicks: Option<u64>,
    /// `null` removes the cap.
    #[schema(minimum = 1, required = false)]
    daily_max_impressions: Option<u64>,
    /// `asap` or `even`, as on creation; cannot be `null`. Serving follows a change at once.
    #[schema(required = false)]
    pacing: Pacing,
    /// Replaces the whole targeting (keys left out of it target every value again, and the
    /// time zone goes back to UTC when left out); `null` removes it.
    #[schema(required = false)]
    targeting: Option<TargetingInput>,
    /// Turns the `rk_click` id on the redirect on or off; cannot be `null`.
    #[schema(required = false)]
    conversion_tracking: bool,
}

/// The submitted image, not yet decoded.
#[derive(Debug, Clone)]
pub struct Upload {
    pub bytes: Vec<u8>,
    /// The client's claimed content type; informative only, the bytes are sniffed.
    pub declared_type: Option<String>,
    /// Where a problem with it is reported: `image` for the one-image forms, the list's name
    /// and index (`images_base64[1]`, `image[2]`) for several.
    pub field: String,
}

impl Upload {
    fn named(mut self, field: String) -> Self {
        self.field = field;
        self
    }
}

/// Up to [`MAX_IMAGES`] images given as a list (`images_base64`, repeated `image` parts):
/// problems are named by the list's name.
fn image_count_ok(errors: &mut Vec<FieldError>, field: &str, images: &[Upload]) -> bool {
    if images.is_empty() {
        errors.push(FieldError::new(field, "required", "must hold at least one"));
        return false;
    }
    if images.len() > MAX_IMAGES {
        errors.push(too_many_images(field, images.len()));
        return false;
    }
    true
}

/// A JSON array of base64 images (`images_base64`), each decoded under the size limit and
/// named by its index.
fn json_images(
    errors: &mut Vec<FieldError>,
    value: Value,
    max_image_bytes: usize,
) -> Result<Option<Vec<Upload>>, IntakeError> {
    const FIELD: &str = "images_base64";
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => {
            errors.push(FieldError::new(
                FIELD,
                "invalid_type",
                "must be an array of base64 strings",
            ));
            return Ok(None);
        }
    };
    if items.len() > MAX_IMAGES {
        // Not decoded: a list too long is refused before its images cost anything.
        errors.push(too_many_images(FIELD, items.len()));
        return Ok(None);
    }
    let mut images = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let name = format!("{FIELD}[{i}]");
        match item {
            Value::String(encoded) => match decode_base64_image(&encoded, max_image_bytes, &name) {
                Ok(upload) => images.push(upload),
                Err(IntakeError::Invalid(fields)) => errors.extend(fields),
                Err(other) => return Err(other),
            },
            _ => errors.push(FieldError::new(
                name,
                "invalid_type",
                "must be a base64 string",
            )),
        }
    }
    Ok(Some(images))
}

/// The fields every advert must have; a blank one is reported as missing.
const REQUIRED: [&str; 4] = ["title", "text", "genre", "target_url"];

/// A submission as it arrived: every field optional and unchecked.
#[derive(Debug, Clone, Default)]
pub struct RawAdvert {
    pub title: Option<String>,
    pub text: Option<String>,
    /// A responsive advert's titles (`titles`, or repeated `title` parts), instead of `title`.
    pub titles: Option<Vec<String>>,
    pub texts: Option<Vec<String>>,
    pub genre: Option<String>,
    pub target_url: Option<String>,
    pub lang: Option<String>,
    pub cta: Option<String>,
    pub weight: Option<String>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub max_impressions: Option<String>,
    pub max_clicks: Option<String>,
    pub daily_max_impressions: Option<String>,
    /// `true` or `false` (JSON), or a form's checkbox value.
    pub conversion_tracking: Option<String>,
    pub pacing: Option<String>,
    /// `targeting` as JSON sent it, or as a form's `targeting.*` parts build it.
    pub targeting: Option<Value>,
    pub image: Option<Upload>,
    /// A responsive advert's images (`images_base64`, or repeated `image` parts), instead of
    /// `image`.
    pub images: Option<Vec<Upload>>,
    /// The HTML form sends the API key as a field.
    pub api_key: Option<String>,
}

impl RawAdvert {
    /// The list fields of a responsive advert.
    fn list(&mut self, name: &str) -> Option<&mut Option<Vec<String>>> {
        match name {
            "titles" => Some(&mut self.titles),
            "texts" => Some(&mut self.texts),
            _ => None,
        }
    }

    /// A multipart text part: `titles` and `texts` parts add to their list, and so does a
    /// `title` or `text` part repeated.
    fn put_part(&mut self, name: &str, value: String) {
        if let Some(key) = name.strip_prefix("targeting.") {
            self.put_targeting(key, &value);
            return;
        }
        let (single, list) = match name {
            "title" | "titles" => (&mut self.title, &mut self.titles),
            "text" | "texts" => (&mut self.text, &mut self.texts),
            _ => {
                if let Some(slot) = self.slot(name) {
                    *slot = Some(value);
                }
                return;
            }
        };
        // A browser sends blank parts for untouched inputs: left out, as elsewhere.
        if value.trim().is_empty() && (single.is_some() || list.is_some()) {
            return;
        }
        if name.ends_with('s') || single.is_some() || list.is_some() {
            let list = list.get_or_insert_with(Vec::new);
            list.extend(single.take());
            list.push(value);
        } else {
            *single = Some(value);
        }
    }

    /// A form's `targeting.{key}` part. A list key takes one value or several, separated by
    /// commas or spaces, and repeated parts add to it (checkboxes); `hours` also takes ranges
    /// (`9-17`; `22-2` wraps past midnight). A blank part is left out.
    fn put_targeting(&mut self, key: &str, value: &str) {
        let items: Vec<&str> = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .collect();
        if items.is_empty() {
            return;
        }
        let Value::Object(map) = self
            .targeting
            .get_or_insert_with(|| Value::Object(Map::new()))
        else {
            return;
        };
        if key == "timezone" {
            map.insert(key.to_owned(), Value::String(value.trim().to_owned()));
            return;
        }
        let Value::Array(list) = map.entry(key).or_insert_with(|| Value::Array(Vec::new())) else {
            return;
        };
        for item in items {
            let range = item
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u8>().ok()?, b.parse::<u8>().ok()?)))
                .filter(|(a, b)| key == "hours" && *a < 24 && *b < 24);
            match range {
                Some((from, to)) => {
                    let mut hour = from;
                    loop {
                        list.push(Value::from(hour));
                        if hour == to {
                            break;
                        }
                        hour = (hour + 1) % 24;
                    }
                }
                // An hour is a number in JSON; what is not one stays text, to be refused.
                None => list.push(match item.parse::<u8>() {
                    Ok(hour) if key == "hours" => Value::from(hour),
                    _ => Value::String(item.to_owned()),
                }),
            }
        }
    }

    /// An image part: a second one makes the list (`image[0]`, `image[1]`, …). Past
    /// [`MAX_IMAGES`] the form is refused before another image is read.
    fn put_image(&mut self, upload: Upload) -> Result<(), IntakeError> {
        let Some(first) = self.image.take() else {
            match &mut self.images {
                None => self.image = Some(upload),
                Some(list) => {
                    if list.len() == MAX_IMAGES {
                        let got = MAX_IMAGES + 1;
                        return Err(IntakeError::Invalid(vec![too_many_images("image", got)]));
                    }
                    let at = list.len();
                    list.push(upload.named(format!("image[{at}]")));
                }
            }
            return Ok(());
        };
        self.images = Some(vec![
            first.named("image[0]".into()),
            upload.named("image[1]".into()),
        ]);
        Ok(())
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "title" => &mut self.title,
            "text" => &mut self.text,
            "genre" => &mut self.genre,
            "target_url" => &mut self.target_url,
            "lang" => &mut self.lang,
            "cta" => &mut self.cta,
            "weight" => &mut self.weight,
            "starts_at" => &mut self.starts_at,
            "ends_at" => &mut self.ends_at,
            "max_impressions" => &mut self.max_impressions,
            "max_clicks" => &mut self.max_clicks,
            "daily_max_impressions" => &mut self.daily_max_impressions,
            "conversion_tracking" => &mut self.conversion_tracking,
            "pacing" => &mut self.pacing,
            "api_key" => &mut self.api_key,
            _ => return None,
        })
    }

    /// Reads a JSON object. Strings stay strings; numbers are accepted for the numeric fields.
    pub fn from_json(body: &[u8], max_image_bytes: usize) -> Result<Self, IntakeError> {
        let mut raw = Self::default();
        let mut errors = Vec::new();
        for (key, value) in json_object(body)? {
            if let Some(list) = raw.list(&key) {
                *list = json_list(&mut errors, &key, value);
                continue;
            }
            if key == "images_base64" {
                raw.images = json_images(&mut errors, value, max_image_bytes)?;
                continue;
            }
            if key == "targeting" {
                raw.targeting = Some(value).filter(|v| !v.is_null());
                continue;
            }
            if key == "image_base64" {
                match value {
                    Value::String(encoded) => {
                        raw.image = Some(decode_base64_image(
                            &encoded,
                            max_image_bytes,
                            "image_base64",
                        )?);
                    }
                    Value::Null => {}
                    _ => errors.push(FieldError::new(
                        key,
                        "invalid_type",
                        "must be a base64 string",
                    )),
                }
                continue;
            }
            let Some(slot) = raw.slot(&key).filter(|_| key != "api_key") else {
                errors.push(unknown_field(key, "is not a field of an advert"));
                continue;
            };
            // Null is the same as leaving the field out. A blank string is not: in JSON it is a
            // value that means nothing (only the HTML form sends blanks for untouched fields).
            match json_text(&key, value) {
                Ok(Some(text)) if text.trim().is_empty() && !REQUIRED.contains(&key.as_str()) => {
                    errors.push(FieldError::new(
                        key,
                        "blank",
                        "must not be blank: leave the field out or send null",
                    ));
                }
                Ok(text) => *slot = text,
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(raw)
        } else {
            Err(IntakeError::Invalid(errors))
        }
    }

    /// Reads multipart/form-data into `self`. The image may come as a file part named `image` or
    /// as an `image_base64` text part. On an error, the fields read before it stay filled in, so
    /// a form can be shown again with what the customer typed.
    pub async fn read_multipart(
        &mut self,
        form: actix_multipart::Multipart,
        max_image_bytes: usize,
    ) -> Result<(), IntakeError> {
        FormReader::new(form, max_image_bytes, usize::MAX)
            .read_rest(self)
            .await
    }

    /// The images given, in either form, if they are 1 to [`MAX_IMAGES`]; problems recorded.
    fn checked_images(&self, errors: &mut Vec<FieldError>) -> Option<Vec<Upload>> {
        match (&self.image, &self.images) {
            (Some(_), Some(_)) => {
                errors.push(both_forms("image_base64", "images_base64"));
                None
            }
            (Some(one), None) => Some(vec![one.clone()]),
            (None, Some(list)) => {
                let field = list
                    .first()
                    .and_then(|u| u.field.split_once('['))
                    .map_or("images_base64", |(name, _)| name);
                image_count_ok(errors, field, list).then(|| list.clone())
            }
            (None, None) => {
                errors.push(FieldError::new(
                    "image",
                    "required",
                    "an image is required (JPEG, PNG, WebP or GIF)",
                ));
                None
            }
        }
    }

    /// Every image given, in either form (for a cheap format check beside other problems).
    pub fn uploads(&self) -> impl Iterator<Item = &Upload> {
        self.image.iter().chain(self.images.iter().flatten())
    }

    /// Checks every field and reports all problems together.
    pub fn validate(&self) -> Result<(NewAdvert, Vec<Upload>), Vec<FieldError>> {
        let mut errors = Vec::new();
        let titles = alternatives(
            &mut errors,
            ("title", "titles"),
            self.title.as_deref(),
            self.titles.as_deref(),
            Title::parse,
        );
        let texts = alternatives(
            &mut errors,
            ("text", "texts"),
            self.text.as_deref(),
            self.texts.as_deref(),
            AdvertText::parse,
        );
        let genre = match present(self.genre.as_deref()) {
            None => {
                errors.push(missing("genre"));
                None
            }
            Some(g) => match Genre::parse(g) {
                Ok(genre) => Some(genre),
                Err(e) => {
                    let mut error = FieldError::new("genre", "unknown_genre", e.to_string());
                    error.allowed =
                        Some(Genre::ALL.iter().map(|g| g.as_str().to_owned()).collect());
                    errors.push(error);
                    None
                }
            },
        };
        // The URL is checked on the raw text, untrimmed: what is stored is what redirects.
        let target_url = match self.target_url.as_deref() {
            None | Some("") => {
                errors.push(missing("target_url"));
                None
            }
            Some(raw) => match TargetUrl::parse(raw) {
                Ok(url) => match crate::domain::url_macros::pieces(raw) {
                    Ok(_) => Some(url),
                    Err(e) => {
                        errors.push(FieldError::invalid("target_url", e));
                        None
                    }
                },
                Err(e) => {
                    errors.push(FieldError::new("target_url", e.code(), e.to_string()));
                    None
                }
            },
        };
        let lang = optional(&mut errors, "lang", self.lang.as_deref(), Lang::parse);
        let cta = optional(&mut errors, "cta", self.cta.as_deref(), CallToAction::parse);
        let weight = optional(&mut errors, "weight", self.weight.as_deref(), parse_weight)
            .unwrap_or(*WEIGHT_RANGE.start());
        let starts_at = optional(
            &mut errors,
            "starts_at",
            self.starts_at.as_deref(),
            parse_time,
        );
        let ends_at = optional(&mut errors, "ends_at", self.ends_at.as_deref(), parse_time);
        errors.extend(schedule_error(starts_at, ends_at));
        let caps = DeliveryCaps {
            max_impressions: optional(
                &mut errors,
                "max_impressions",
                self.max_impressions.as_deref(),
                parse_cap,
            ),
            max_clicks: optional(
                &mut errors,
                "max_clicks",
                self.max_clicks.as_deref(),
                parse_cap,
            ),
            daily_max_impressions: optional(
                &mut errors,
                "daily_max_impressions",
                self.daily_max_impressions.as_deref(),
                parse_cap,
            ),
            pacing: optional(&mut errors, "pacing", self.pacing.as_deref(), Pacing::parse)
                .unwrap_or_default(),
        };
        let targeting = match &self.targeting {
            None => Targeting::default(),
            Some(value) => Targeting::from_json(value).unwrap_or_else(|problems| {
                errors.extend(problems.into_iter().map(|(f, e)| FieldError::invalid(f, e)));
                Targeting::default()
            }),
        };
        let conversion_tracking = optional(
            &mut errors,
            "conversion_tracking",
            self.conversion_tracking.as_deref(),
            parse_flag,
        )
        .unwrap_or(false);
        let images = self.checked_images(&mut errors);
        match (titles, texts, genre, target_url, images) {
            (Some(titles), Some(texts), Some(genre), Some(target_url), Some(images))
                if errors.is_empty() =>
            {
                let (title, more_titles) = titles;
                let (text, more_texts) = texts;
                Ok((
                    NewAdvert {
                        title,
                        text,
                        more_titles,
                        more_texts,
                        genre,
                        lang,
                        cta,
                        target_url,
                        weight,
                        starts_at,
                        ends_at,
                        caps,
                        targeting,
                        conversion_tracking,
                    },
                    images,
                ))
            }
            _ => Err(errors),
        }
    }
}

/// The fields a PATCH may change.
const PATCHABLE: [&str; 17] = [
    "title",
    "text",
    "titles",
    "texts",
    "cta",
    "image_base64",
    "images_base64",
    "status",
    "weight",
    "starts_at",
    "ends_at",
    "max_impressions",
    "max_clicks",
    "daily_max_impressions",
    "pacing",
    "targeting",
    "conversion_tracking",
];

/// A PATCH body once read: the validated change, and new images still to be processed (they
/// replace all the advert's images).
#[derive(Debug, Clone, Default)]
pub struct PatchRequest {
    pub patch: AdvertPatch,
    pub images: Option<Vec<Upload>>,
}

impl PatchRequest {
    /// Changes nothing.
    pub fn is_empty(&self) -> bool {
        self.patch.is_empty() && self.images.is_none()
    }
}

/// Reads a PATCH body: every field it names is checked, and every problem reported together.
/// A field left out stays as it is; `null` clears the fields that may be empty. A new image is
/// decoded from base64 here (bounded by `max_image_bytes`) and processed later, off the async
/// workers, like on creation.
pub fn parse_patch(body: &[u8], max_image_bytes: usize) -> Result<PatchRequest, IntakeError> {
    let mut request = PatchRequest::default();
    let patch = &mut request.patch;
    let mut errors = Vec::new();
    let object = json_object(body)?;
    let fields: std::collections::HashSet<String> = object.keys().cloned().collect();
    for (key, value) in object {
        if !PATCHABLE.contains(&key.as_str()) {
            let mut error = unknown_field(key, "is not a field that can be changed");
            error.allowed = Some(PATCHABLE.iter().map(|f| (*f).to_owned()).collect());
            errors.push(error);
            continue;
        }
        if matches!(key.as_str(), "titles" | "texts") {
            if value.is_null() {
                errors.push(FieldError::new(
                    key,
                    "invalid_type",
                    "must be an array of strings; it cannot be cleared",
                ));
                continue;
            }
            match json_list(&mut errors, &key, value) {
                None => {}
                Some(list) => {
                    let errors = &mut errors;
                    if key == "titles" {
                        patch.titles = checked_list(errors, &key, &list, Title::parse)
                            .map(|(f, m)| join(f, m));
                    } else {
                        patch.texts = checked_list(errors, &key, &list, AdvertText::parse)
                            .map(|(f, m)| join(f, m));
                    }
                }
            }
            continue;
        }
        if key == "images_base64" {
            if value.is_null() {
                errors.push(FieldError::new(
                    key,
                    "invalid_type",
                    "must be an array of base64 strings; it cannot be cleared",
                ));
                continue;
            }
            if let Some(images) = json_images(&mut errors, value, max_image_bytes)?
                && image_count_ok(&mut errors, &key, &images)
            {
                request.images = Some(images);
            }
            continue;
        }
        if key == "targeting" {
            match Targeting::from_json(&value) {
                _ if value.is_null() => patch.targeting = Some(Targeting::default()),
                Ok(targeting) => patch.targeting = Some(targeting),
                Err(problems) => {
                    errors.extend(problems.into_iter().map(|(f, e)| FieldError::invalid(f, e)));
                }
            }
            continue;
        }
        if key == "image_base64" {
            match value {
                Value::String(encoded) => {
                    match decode_base64_image(&encoded, max_image_bytes, "image_base64") {
                        Ok(upload) => request.images = Some(vec![upload]),
                        Err(IntakeError::Invalid(fields)) => errors.extend(fields),
                        Err(other) => return Err(other),
                    }
                }
                Value::Null => errors.push(FieldError::new(
                    key,
                    "invalid_type",
                    "must be a base64 string; it cannot be cleared",
                )),
                _ => errors.push(FieldError::new(
                    key,
                    "invalid_type",
                    "must be a base64 string",
                )),
            }
            continue;
        }
        let text = match json_text(&key, value) {
            Ok(text) => text,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let errors = &mut errors;
        match key.as_str() {
            "title" => {
                patch.titles = not_null(errors, &key, text, Title::parse).map(|t| vec![t]);
            }
            "text" => {
                patch.texts = not_null(errors, &key, text, AdvertText::parse).map(|t| vec![t]);
            }
            "cta" => patch.cta = nullable(errors, &key, text, CallToAction::parse),
            "status" => {
                let before = errors.len();
                patch.status = not_null(errors, &key, text, AdvertStatus::parse);
                if let Some(error) = errors.get_mut(before) {
                    error.allowed = Some(
                        AdvertStatus::SETTABLE
                            .iter()
                            .map(|s| s.as_str().to_owned())
                            .collect(),
                    );
                }
            }
            "weight" => patch.weight = not_null(errors, &key, text, parse_weight),
            "starts_at" => patch.starts_at = nullable(errors, &key, text, parse_time),
            "ends_at" => patch.ends_at = nullable(errors, &key, text, parse_time),
            "max_impressions" => patch.max_impressions = nullable(errors, &key, text, parse_cap),
            "max_clicks" => patch.max_clicks = nullable(errors, &key, text, parse_cap),
            "conversion_tracking" => {
                patch.conversion_tracking = not_null(errors, &key, text, parse_flag);
            }
            "pacing" => patch.pacing = not_null(errors, &key, text, Pacing::parse),
            _ => patch.daily_max_impressions = nullable(errors, &key, text, parse_cap),
        }
    }
    for (single, list) in [
        ("title", "titles"),
        ("text", "texts"),
        ("image_base64", "images_base64"),
    ] {
        if fields.contains(single) && fields.contains(list) {
            errors.push(both_forms(single, list));
        }
    }
    // Within the patch itself; against the stored values, the store checks again.
    if let (Some(starts_at), Some(ends_at)) = (patch.starts_at, patch.ends_at) {
        errors.extend(schedule_error(starts_at, ends_at));
    }
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(IntakeError::Invalid(errors))
    }
}

/// `ends_at` must be later than `starts_at` when both are set.
pub fn schedule_error(
    starts_at: Option<OffsetDateTime>,
    ends_at: Option<OffsetDateTime>,
) -> Option<FieldError> {
    match (starts_at, ends_at) {
        (Some(s), Some(e)) if e <= s => Some(FieldError::new(
            "ends_at",
            "before_start",
            "must be later than starts_at",
        )),
        _ => None,
    }
}

/// A JSON body that must be an object; anything else is a malformed body.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, IntakeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| IntakeError::MalformedBody(format!("the JSON body is malformed: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(IntakeError::MalformedBody(
            "the JSON body must be an object".into(),
        )),
    }
}

fn is_numeric(field: &str) -> bool {
    matches!(
        field,
        "weight" | "max_impressions" | "max_clicks" | "daily_max_impressions"
    )
}

fn is_flag(field: &str) -> bool {
    field == "conversion_tracking"
}

fn expected_type(field: &str) -> &'static str {
    if is_numeric(field) {
        "a number"
    } else if is_flag(field) {
        "a boolean"
    } else {
        "a string"
    }
}

/// One field's JSON value as the text the parsers read: a string as it is, a number (numeric
/// fields only) as JSON spells it, `null` as `None`. Create and PATCH both read through this, so
/// a field accepts the same types in both.
fn json_text(field: &str, value: Value) -> Result<Option<String>, FieldError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if !is_flag(field) => Ok(Some(s)),
        Value::Number(n) if is_numeric(field) => Ok(Some(n.to_string())),
        Value::Bool(b) if is_flag(field) => Ok(Some(b.to_string())),
        _ => Err(FieldError::new(
            field,
            "invalid_type",
            format!("must be {}", expected_type(field)),
        )),
    }
}

fn unknown_field(field: String, message: &str) -> FieldError {
    FieldError::new(field, "unknown_field", message)
}

fn present(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

fn missing(field: &str) -> FieldError {
    FieldError::new(field, "required", "is required")
}

/// Parses one value, recording its problem under `field`.
fn checked<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<T> {
    parse(value)
        .map_err(|e| errors.push(FieldError::invalid(field, e)))
        .ok()
}

/// A value's problem, under the field that holds it.
fn required<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<T> {
    match value {
        None => {
            errors.push(missing(field));
            None
        }
        Some(v) => checked(errors, field, v, parse),
    }
}

/// Submissions: a blank field is a field left out.
fn optional<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<T> {
    present(value).and_then(|v| checked(errors, field, v, parse))
}

/// PATCH, a field that always has a value: `null` is refused.
fn not_null<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<String>,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<T> {
    match value {
        Some(v) => checked(errors, field, &v, parse),
        None => {
            errors.push(FieldError::new(
                field,
                "invalid_type",
                format!("must be {}; it cannot be cleared", expected_type(field)),
            ));
            None
        }
    }
}

/// PATCH, a field that may be empty: `null` clears it (`Some(None)`); a value that does not
/// parse leaves it alone (`None`) and is reported.
fn nullable<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<String>,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => checked(errors, field, &v, parse).map(Some),
    }
}

/// `got` images where at most [`MAX_IMAGES`] may be (a form is refused at the first one past).
fn too_many_images(field: &str, got: usize) -> FieldError {
    FieldError::new(
        field,
        "too_many",
        format!("must hold at most {MAX_IMAGES} images (got {got})"),
    )
}

fn both_forms(single: &str, list: &str) -> FieldError {
    FieldError::new(
        list,
        "conflict",
        format!("give either {single} or {list}, not both"),
    )
}

fn join<T>(first: T, more: Vec<T>) -> Vec<T> {
    std::iter::once(first).chain(more).collect()
}

/// A JSON array of strings (`titles`, `texts`); `null` is `None`. Anything else is reported.
fn json_list(errors: &mut Vec<FieldError>, field: &str, value: Value) -> Option<Vec<String>> {
    match value {
        Value::Null => None,
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => list.push(s),
                    _ => errors.push(FieldError::new(
                        format!("{field}[{i}]"),
                        "invalid_type",
                        "must be a string",
                    )),
                }
            }
            Some(list)
        }
        _ => {
            errors.push(FieldError::new(
                field,
                "invalid_type",
                "must be an array of strings",
            ));
            None
        }
    }
}

/// A list of 1 to [`MAX_ALTERNATIVES`] different values, each parsed; problems are named by
/// index (`titles[2]`). The first value, and the rest.
fn checked_list<T: AsRef<str>>(
    errors: &mut Vec<FieldError>,
    field: &str,
    values: &[String],
    parse: impl Fn(&str) -> Result<T, Invalid>,
) -> Option<(T, Vec<T>)> {
    if values.is_empty() {
        errors.push(FieldError::new(field, "required", "must hold at least one"));
        return None;
    }
    if values.len() > MAX_ALTERNATIVES {
        errors.push(FieldError::new(
            field,
            "too_many",
            format!(
                "must hold at most {MAX_ALTERNATIVES} (got {})",
                values.len()
            ),
        ));
        return None;
    }
    let before = errors.len();
    let parsed: Vec<T> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| checked(errors, &format!("{field}[{i}]"), v, &parse))
        .collect();
    if errors.len() > before {
        return None;
    }
    // The same words twice would be two creatives that cannot differ.
    for (i, value) in parsed.iter().enumerate() {
        if let Some(first) = parsed[..i]
            .iter()
            .position(|v| v.as_ref() == value.as_ref())
        {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                "duplicate",
                format!("repeats {field}[{first}]"),
            ));
        }
    }
    if errors.len() > before {
        return None;
    }
    let mut parsed = parsed.into_iter();
    let first = parsed.next()?;
    Some((first, parsed.collect()))
}

/// A field given as one value (`title`) or as a list (`titles`), not both; one is required.
fn alternatives<T: AsRef<str>>(
    errors: &mut Vec<FieldError>,
    (single, list): (&str, &str),
    one: Option<&str>,
    many: Option<&[String]>,
    parse: impl Fn(&str) -> Result<T, Invalid>,
) -> Option<(T, Vec<T>)> {
    match (one, many) {
        (Some(_), Some(_)) => {
            errors.push(both_forms(single, list));
            None
        }
        (_, Some(values)) => checked_list(errors, list, values, parse),
        (one, None) => required(errors, single, one, parse).map(|v| (v, Vec::new())),
    }
}

fn parse_weight(raw: &str) -> Result<u32, Invalid> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|w| WEIGHT_RANGE.contains(w))
        .ok_or_else(|| {
            Invalid::new(
                "out_of_range",
                format!(
                    "must be a whole number from {} to {}",
                    WEIGHT_RANGE.start(),
                    WEIGHT_RANGE.end()
                ),
            )
        })
}

/// A switch: JSON's `true` and `false` (read as text), or what a form's checkbox sends.
fn parse_flag(raw: &str) -> Result<bool, Invalid> {
    match raw.trim() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(Invalid::new("invalid_type", "must be true or false")),
    }
}

fn parse_cap(raw: &str) -> Result<u64, Invalid> {
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=i64::MAX as u64).contains(n))
        .ok_or_else(|| Invalid::new("out_of_range", "must be a whole number of at least 1"))
}

fn parse_time(raw: &str) -> Result<OffsetDateTime, Invalid> {
    OffsetDateTime::parse(raw.trim(), &Rfc3339).map_err(|_| {
        Invalid::new(
            "invalid_time",
            "must be an RFC 3339 time such as 2026-12-01T00:00:00Z",
        )
    })
}

fn decode_base64_image(
    encoded: &str,
    max_image_bytes: usize,
    field: &str,
) -> Result<Upload, IntakeError> {
    // Accept data: URLs as browsers produce them, and line-wrapped base64.
    let data = match encoded.split_once(";base64,") {
        Some((prefix, data)) if prefix.starts_with("data:") => data,
        _ => encoded,
    };
    // Byte-wise: base64 is ASCII, and any other byte fails the decode below all the same.
    let compact: std::borrow::Cow<'_, [u8]> = if data.bytes().any(|b| b.is_ascii_whitespace()) {
        data.bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>()
            .into()
    } else {
        data.as_bytes().into()
    };
    if compact.len() / 4 * 3 > max_image_bytes + 3 {
        return Err(IntakeError::TooLarge {
            field: field.into(),
            limit: max_image_bytes,
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| {
            IntakeError::Invalid(vec![FieldError::new(
                field,
                "invalid_base64",
                format!("is not valid base64: {e}"),
            )])
        })?;
    if bytes.len() > max_image_bytes {
        return Err(IntakeError::TooLarge {
            field: field.into(),
            limit: max_image_bytes,
        });
    }
    Ok(Upload {
        bytes,
        declared_type: None,
        // Problems found once it is decoded are the image's.
        field: if field == "image_base64" {
            "image".into()
        } else {
            field.into()
        },
    })
}

/// Reads an advert's multipart/form-data body part by part, within a limit on the whole body,
/// and can stop before the first image part so that the key is checked before the large part of
/// the body is read.
pub struct FormReader {
    form: actix_multipart::Multipart,
    /// An image part met by [`FormReader::read_until_image`], not read yet.
    pending: Option<actix_multipart::Field>,
    parts: usize,
    /// Content bytes read so far, every part together.
    total: usize,
    max_total: usize,
    max_image_bytes: usize,
}

impl FormReader {
    pub fn new(form: actix_multipart::Multipart, max_image_bytes: usize, max_total: usize) -> Self {
        Self {
            form,
            pending: None,
            parts: 0,
            total: 0,
            max_total,
            max_image_bytes,
        }
    }

    /// Whether an image part is waiting to be read.
    pub fn image_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Reads the text parts up to the first image part, which is left unread.
    pub async fn read_until_image(&mut self, raw: &mut RawAdvert) -> Result<(), IntakeError> {
        self.read(raw, true).await
    }

    /// Reads everything left (the pending image part first).
    pub async fn read_rest(mut self, raw: &mut RawAdvert) -> Result<(), IntakeError> {
        self.read(raw, false).await
    }

    async fn next_field(&mut self) -> Result<Option<actix_multipart::Field>, IntakeError> {
        if let Some(field) = self.pending.take() {
            return Ok(Some(field));
        }
        let Some(field) = self.form.try_next().await.map_err(multipart_error)? else {
            return Ok(None);
        };
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return Err(IntakeError::MalformedBody(format!(
                "the form has more than {MAX_PARTS} parts"
            )));
        }
        Ok(Some(field))
    }

    async fn read(&mut self, raw: &mut RawAdvert, stop_at_image: bool) -> Result<(), IntakeError> {
        let max_image_bytes = self.max_image_bytes;
        while let Some(mut field) = self.next_field().await? {
            let name = field
                .content_disposition()
                .and_then(|cd| cd.get_name())
                .unwrap_or_default()
                .to_owned();
            let image = name == "image" || name == "image_base64";
            if image && stop_at_image {
                self.pending = Some(field);
                return Ok(());
            }
            if name == "image" {
                let declared_type = field.content_type().map(|m| m.essence_str().to_owned());
                let bytes = self
                    .read_limited(&mut field, max_image_bytes, "image")
                    .await?;
                // A browser sends an empty part when no file was chosen.
                if !bytes.is_empty() {
                    raw.put_image(Upload {
                        bytes,
                        declared_type,
                        field: "image".into(),
                    })?;
                }
                continue;
            }
            if name == "image_base64" {
                let limit = max_image_bytes.div_ceil(3) * 4 + 4;
                let bytes = self.read_limited(&mut field, limit, "image_base64").await?;
                let text = utf8_field(bytes, &name)?;
                if !text.trim().is_empty() {
                    raw.put_image(decode_base64_image(&text, max_image_bytes, "image_base64")?)?;
                }
                continue;
            }
            let bytes = self
                .read_limited(&mut field, MAX_TEXT_FIELD_BYTES, &name)
                .await?;
            raw.put_part(&name, utf8_field(bytes, &name)?);
            // Unknown parts (a submit button's name, say) are ignored, as browsers send them.
        }
        Ok(())
    }

    async fn read_limited(
        &mut self,
        field: &mut actix_multipart::Field,
        limit: usize,
        name: &str,
    ) -> Result<Vec<u8>, IntakeError> {
        let mut buf = Vec::new();
        while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
            if buf.len() + chunk.len() > limit {
                return Err(IntakeError::TooLarge {
                    field: name.to_owned(),
                    limit,
                });
            }
            self.total += chunk.len();
            if self.total > self.max_total {
                return Err(IntakeError::TooLarge {
                    field: "body".to_owned(),
                    limit: self.max_total,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }
}

fn utf8_field(bytes: Vec<u8>, name: &str) -> Result<String, IntakeError> {
    String::from_utf8(bytes).map_err(|_| {
        IntakeError::Invalid(vec![FieldError::new(
            name,
            "invalid_utf8",
            "must be UTF-8 text",
        )])
    })
}

fn multipart_error(e: actix_multipart::MultipartError) -> IntakeError {
    IntakeError::MalformedBody(format!("the multipart body is malformed: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod documentation_tests {
    use std::collections::BTreeSet;

    use super::*;

    fn properties<T: utoipa::PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn the_documented_json_fields_are_the_ones_the_parser_reads() {
        let documented = properties::<AdvertInput>();
        for field in &documented {
            let body = serde_json::json!({ field: null }).to_string();
            assert!(
                RawAdvert::from_json(body.as_bytes(), 1024).is_ok(),
                "{field} is documented but refused"
            );
        }
        // The form's key is not a JSON field.
        assert!(RawAdvert::from_json(br#"{"api_key": null}"#, 1024).is_err());
        assert!(!documented.contains("api_key"));

        // Multipart: the same fields, plus the image as a file and the form's key; several images
        // are repeated parts, not a list field.
        let mut multipart = documented;
        multipart.remove("images_base64");
        multipart.extend(["image".to_owned(), "api_key".to_owned()]);
        // Targeting comes as one part per key.
        multipart.remove("targeting");
        multipart.extend(crate::domain::targeting::KEYS.map(|key| format!("targeting.{key}")));
        assert_eq!(properties::<AdvertUpload>(), multipart);
    }

    #[test]
    fn the_documented_patch_fields_are_the_patchable_ones() {
        let patchable: BTreeSet<String> = PATCHABLE.iter().map(|f| (*f).to_owned()).collect();
        assert_eq!(properties::<AdvertPatchInput>(), patchable);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod patch_tests {
    use super::*;

    fn fields(body: &str) -> Vec<(String, &'static str)> {
        match parse_patch(body.as_bytes(), 1024) {
            Err(IntakeError::Invalid(fields)) => {
                fields.into_iter().map(|f| (f.field, f.code)).collect()
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn pacing_changes_to_asap_or_even_and_cannot_be_cleared() {
        let request = parse_patch(br#"{"pacing": " EVEN "}"#, 1024).unwrap();
        assert_eq!(request.patch.pacing, Some(Pacing::Even));
        assert_eq!(
            fields(r#"{"pacing": null}"#),
            [("pacing".into(), "invalid_type")]
        );
        assert_eq!(
            fields(r#"{"pacing": 1}"#),
            [("pacing".into(), "invalid_type")]
        );
        match parse_patch(br#"{"pacing": "later"}"#, 1024) {
            Err(IntakeError::Invalid(fields)) => {
                assert_eq!(fields[0].field, "pacing");
                assert_eq!(
                    fields[0].allowed.as_deref(),
                    Some(&["asap".to_owned(), "even".to_owned()][..])
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_fields_are_checked_as_on_creation() {
        let request = parse_patch(br#"{"title": "  New title ", "text": "a\r\nb"}"#, 1024).unwrap();
        assert_eq!(request.patch.titles.unwrap()[0].as_str(), "New title");
        assert_eq!(request.patch.texts.unwrap()[0].as_str(), "a\nb");
        assert!(request.images.is_none());
        let long = format!(r#"{{"title": "{}", "text": ""}}"#, "x".repeat(91));
        assert_eq!(
            fields(&long),
            // serde_json reads an object's keys in sorted order.
            [("text".into(), "required"), ("title".into(), "too_long")]
        );
        assert_eq!(
            fields(r#"{"title": null, "image_base64": null}"#),
            [
                ("image_base64".into(), "invalid_type"),
                ("title".into(), "invalid_type")
            ]
        );
    }

    #[test]
    fn lists_of_titles_and_texts_replace_them_all_and_name_the_index_of_a_problem() {
        let request =
            parse_patch(br#"{"titles": ["One", " Two "], "texts": ["x"]}"#, 1024).unwrap();
        let titles: Vec<&str> = request
            .patch
            .titles
            .as_deref()
            .unwrap()
            .iter()
            .map(Title::as_str)
            .collect();
        assert_eq!(titles, ["One", "Two"]);
        assert_eq!(request.patch.texts.unwrap().len(), 1);
        let too_long = format!(r#"{{"titles": ["ok", "ok", "{}"]}}"#, "x".repeat(91));
        assert_eq!(fields(&too_long), [("titles[2]".into(), "too_long")]);
        assert_eq!(
            fields(r#"{"titles": [], "texts": ["a", 7]}"#),
            [
                ("texts[1]".into(), "invalid_type"),
                ("titles".into(), "required")
            ]
        );
        assert_eq!(
            fields(r#"{"titles": ["1", "2", "3", "4", "5", "6"]}"#),
            [("titles".into(), "too_many")]
        );
        assert_eq!(
            fields(r#"{"title": "a", "titles": ["b"]}"#),
            [("titles".into(), "conflict")]
        );
        // Equal once trimmed and normalised.
        assert_eq!(
            fields(r#"{"titles": ["Sea", "Sun", " Sea "]}"#),
            [("titles[2]".into(), "duplicate")]
        );
        assert_eq!(
            fields(r#"{"titles": null, "texts": "one"}"#),
            [
                ("texts".into(), "invalid_type"),
                ("titles".into(), "invalid_type")
            ]
        );
    }

    #[test]
    fn a_new_advert_takes_one_title_or_a_list_of_them() {
        let base = r#""genre": "travel", "target_url": "https://example.com/""#;
        let raw = RawAdvert::from_json(
            format!(r#"{{"titles": ["A", "B"], "texts": ["x", "y", "z"], {base}}}"#).as_bytes(),
            1024,
        )
        .unwrap();
        let errors = match raw.validate() {
            Err(errors) => errors,
            Ok(_) => panic!("no image"),
        };
        let named: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(named, ["image"]);
        let mut raw = raw;
        raw.image = Some(Upload {
            bytes: vec![1],
            declared_type: None,
            field: "image".into(),
        });
        let (new, _) = raw.validate().unwrap();
        assert_eq!(new.title.as_str(), "A");
        assert_eq!(new.more_titles.len(), 1);
        assert_eq!(new.more_texts.len(), 2);

        let both = RawAdvert::from_json(
            format!(r#"{{"title": "A", "titles": ["B"], "text": "x", {base}}}"#).as_bytes(),
            1024,
        )
        .unwrap();
        let codes: Vec<(String, &str)> = both
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect();
        assert!(codes.contains(&("titles".into(), "conflict")), "{codes:?}");
        assert!(!codes.iter().any(|(f, _)| f == "title"), "{codes:?}");
    }

    #[test]
    fn repeated_form_parts_make_a_list() {
        let mut raw = RawAdvert::default();
        raw.put_part("title", "A".into());
        assert_eq!(raw.title.as_deref(), Some("A"));
        assert!(raw.titles.is_none());
        raw.put_part("title", "B".into());
        raw.put_part("titles", "C".into());
        raw.put_part("title", "  ".into());
        assert!(raw.title.is_none());
        assert_eq!(raw.titles.as_deref().unwrap(), ["A", "B", "C"]);
        raw.put_part("texts", "x".into());
        assert!(raw.text.is_none());
        assert_eq!(raw.texts.as_deref().unwrap(), ["x"]);
        raw.put_part("genre", "travel".into());
        assert_eq!(raw.genre.as_deref(), Some("travel"));
    }

    #[test]
    fn a_new_image_is_decoded_and_bounded() {
        let request = parse_patch(br#"{"image_base64": "aGVsbG8="}"#, 1024).unwrap();
        assert_eq!(request.images.unwrap()[0].bytes, b"hello");
        assert_eq!(
            fields(r#"{"image_base64": "***", "weight": 0}"#),
            [
                ("image_base64".into(), "invalid_base64"),
                ("weight".into(), "out_of_range")
            ]
        );
        let big = format!(r#"{{"image_base64": "{}"}}"#, "A".repeat(4096));
        assert!(matches!(
            parse_patch(big.as_bytes(), 1024),
            Err(IntakeError::TooLarge { .. })
        ));
    }
}
