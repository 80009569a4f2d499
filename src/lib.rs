//! reklama: advertising content under high load, in one binary.
//!
//! `domain` is the shared vocabulary, `platform` the infrastructure without business rules,
//! `modules` the three business modules, `portal` the customer's HTML pages above them, and
//! `main_app` the composition root that wires them.

pub mod domain;
pub mod main_app;
pub mod modules;
pub mod platform;
pub mod portal;

/// Entry points for the fuzz targets in `fuzz/` (cargo-fuzz). Not an API: hidden from the docs,
/// free to change or vanish with any commit; nothing but `fuzz/` may call it.
#[doc(hidden)]
pub mod fuzzing {
    use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
    use actix_web::web::Bytes;

    use crate::modules::intake::fuzz_entry::{RawAdvert, make_creative, parse_patch};
    use crate::modules::intake::{CreativeSpec, IntakeSettings};

    /// The production limits: `config/default.toml`'s `[intake]`.
    pub fn creative_spec() -> CreativeSpec {
        IntakeSettings {
            max_image_bytes: 10 * 1024 * 1024,
            creative_max_width: 600,
            creative_max_height: 600,
            creative_quality: 80,
            max_source_dimension: 12_000,
            max_source_pixels: 40_000_000,
            max_decode_alloc_bytes: 256 * 1024 * 1024,
        }
        .creative_spec()
    }

    /// A JSON advert body, read and validated as `POST /api/v1/adverts` does (without the
    /// image work). `Ok` when the advert would go on to the image step.
    pub fn advert_json(body: &[u8]) -> Result<(), String> {
        let raw = RawAdvert::from_json(body, 10 * 1024 * 1024).map_err(|e| e.to_string())?;
        raw.validate()
            .map(drop)
            .map_err(|fields| format!("{} invalid fields", fields.len()))
    }

    /// A JSON body of `PATCH /api/v1/adverts/{id}`.
    pub fn patch_json(body: &[u8]) -> Result<(), String> {
        parse_patch(body, 10 * 1024 * 1024)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// A multipart/form-data body with this `Content-Type`, delivered in chunks of `chunk`
    /// bytes, read and validated as `POST /api/v1/adverts` does.
    pub fn advert_multipart(content_type: &str, body: &[u8], chunk: usize) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(content_type).map_err(|e| e.to_string())?;
        headers.insert(CONTENT_TYPE, value);
        let chunks: Vec<Result<Bytes, actix_web::error::PayloadError>> = body
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let form = actix_multipart::Multipart::new(&headers, futures_util::stream::iter(chunks));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let mut raw = RawAdvert::default();
            raw.read_multipart(form, 10 * 1024 * 1024)
                .await
                .map_err(|e| e.to_string())?;
            raw.validate()
                .map(drop)
                .map_err(|fields| format!("{} invalid fields", fields.len()))
        })
    }

    /// An uploaded image through the whole creative pipeline: sniff, header checks, decode under
    /// limits, orient, resize, encode. Returns the creative's size.
    pub fn creative(bytes: &[u8]) -> Result<(u32, u32), String> {
        let spec = creative_spec();
        make_creative(bytes, &spec)
            .map(|c| (c.width, c.height))
            .map_err(|e| e.to_string())
    }
}
