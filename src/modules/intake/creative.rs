//! Turns an uploaded advert image into the small, metadata-free JPEG "creative" served to end users.
//!
//! Uploads are hostile input: every size is checked against the spec before pixels are
//! allocated, and the decoder runs under explicit `image::Limits` so a decompression bomb
//! costs a header read, not gigabytes. The original bytes are archived elsewhere unchanged.

use std::io::Cursor;

use ::image::metadata::Orientation;
use ::image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

use super::resample;

/// Longest decoder message kept in [`ImageError::Corrupt`]: it is shown to customers and logged.
const MAX_REASON_CHARS: usize = 200;

/// Image formats accepted for upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Jpeg,
    Png,
    WebP,
    Gif,
}

impl SourceFormat {
    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::WebP => "image/webp",
            Self::Gif => "image/gif",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::WebP => "webp",
            Self::Gif => "gif",
        }
    }

    /// Maps a declared content type to a format. Only a hint for callers: [`sniff`] decides.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let essence = mime.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            // image/jpg and image/pjpeg are non-standard but still sent by older browsers.
            "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/webp" => Some(Self::WebP),
            "image/gif" => Some(Self::Gif),
            _ => None,
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Png => ImageFormat::Png,
            Self::WebP => ImageFormat::WebP,
            Self::Gif => ImageFormat::Gif,
        }
    }
}

/// What a creative must look like and how much an upload may cost to produce it.
#[derive(Debug, Clone)]
pub struct CreativeSpec {
    pub max_width: u32,
    pub max_height: u32,
    /// JPEG quality, 1..=100; out-of-range values are clamped.
    pub quality: u8,
    pub max_input_bytes: usize,
    /// Longest accepted side, checked from the header before any pixel is decoded.
    pub max_source_dimension: u32,
    /// Largest accepted width × height, checked from the header before any pixel is decoded.
    pub max_source_pixels: u64,
    /// Passed to `image::Limits::max_alloc`; also caps the decoded pixel buffer.
    pub max_decode_alloc: u64,
}

impl Default for CreativeSpec {
    fn default() -> Self {
        Self {
            max_width: 600,
            max_height: 600,
            quality: 80,
            max_input_bytes: 10 * 1024 * 1024,
            max_source_dimension: 12_000,
            max_source_pixels: 40_000_000,
            max_decode_alloc: 256 * 1024 * 1024,
        }
    }
}

/// The JPEG served to end users, plus what the caller needs to store and address it.
#[derive(Debug, Clone)]
pub struct Creative {
    pub bytes: Vec<u8>,
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
    /// First 16 hex chars of the SHA-256 of `bytes`, for cache-busting URLs.
    pub hash: String,
    pub source_format: SourceFormat,
    /// Source size after EXIF orientation, i.e. as the customer sees it.
    pub source_width: u32,
    pub source_height: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the uploaded image is empty")]
    Empty,
    #[error("the uploaded image is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "unsupported image format ({}); accepted formats are JPEG, PNG, WebP and GIF",
        describe_detected(.detected.as_deref())
    )]
    UnsupportedFormat { detected: Option<String> },
    #[error(
        "the image is {width}x{height} pixels; at most {max_side} pixels per side and {max_pixels} pixels in total are accepted"
    )]
    DimensionsTooLarge {
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("the image could not be decoded: {reason}")]
    Corrupt { reason: String },
}

impl ImageError {
    /// Stable machine-readable identifier for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedFormat { .. } => "unsupported_format",
            Self::DimensionsTooLarge { .. } => "dimensions_too_large",
            Self::Corrupt { .. } => "corrupt",
        }
    }

    fn corrupt(reason: impl std::fmt::Display) -> Self {
        let reason = reason.to_string();
        let reason = match reason.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => format!("{}…", &reason[..cut]),
            None => reason,
        };
        Self::Corrupt { reason }
    }
}

fn describe_detected(detected: Option<&str>) -> String {
    match detected {
        Some(name) => format!("detected {name}"),
        None => "not a recognised image".to_owned(),
    }
}

/// Sniff the format from the magic bytes only (never trust the declared content type).
pub fn sniff(bytes: &[u8]) -> Result<SourceFormat, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    match ::image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => Ok(SourceFormat::Jpeg),
        Ok(ImageFormat::Png) => Ok(SourceFormat::Png),
        Ok(ImageFormat::WebP) => Ok(SourceFormat::WebP),
        Ok(ImageFormat::Gif) => Ok(SourceFormat::Gif),
        // The Debug name ("Bmp", "Tiff", "Pnm") is clearer to a customer than an extension
        // list entry such as "pbm".
        Ok(other) => Err(ImageError::UnsupportedFormat {
            detected: Some(format!("{other:?}").to_ascii_lowercase()),
        }),
        Err(_) => Err(ImageError::UnsupportedFormat { detected: None }),
    }
}

/// An upload decoded under the spec's limits, not yet oriented or resized.
struct Decoded {
    image: DynamicImage,
    orientation: Orientation,
    source_format: SourceFormat,
}

/// Checks and decodes an upload: size, format, header dimensions (before any pixel is
/// allocated), then the pixels under `image::Limits`.
fn decode_source(bytes: &[u8], spec: &CreativeSpec) -> Result<Decoded, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > spec.max_input_bytes {
        return Err(ImageError::TooLarge {
            limit: spec.max_input_bytes,
        });
    }
    let source_format = sniff(bytes)?;

    let too_large = |width: u32, height: u32| ImageError::DimensionsTooLarge {
        width,
        height,
        max_side: spec.max_source_dimension,
        max_pixels: spec.max_source_pixels,
    };

    // The header pass keeps the allocation cap (PNG text chunks are inflated while reading the
    // header) but no size caps, so that an oversized image is reported with its real size.
    let mut header_limits = Limits::default();
    header_limits.max_alloc = Some(spec.max_decode_alloc);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), source_format.image_format());
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder().map_err(ImageError::corrupt)?;

    let (raw_width, raw_height) = decoder.dimensions();
    if raw_width == 0 || raw_height == 0 {
        return Err(ImageError::corrupt("the image has no pixels"));
    }
    if raw_width > spec.max_source_dimension
        || raw_height > spec.max_source_dimension
        || u64::from(raw_width) * u64::from(raw_height) > spec.max_source_pixels
    {
        return Err(too_large(raw_width, raw_height));
    }

    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(spec.max_source_dimension);
    decode_limits.max_image_height = Some(spec.max_source_dimension);
    decode_limits.max_alloc = Some(spec.max_decode_alloc);
    decoder
        .set_limits(decode_limits)
        .map_err(|e| decode_error(e, || too_large(raw_width, raw_height)))?;
    // `DynamicImage::from_decoder` allocates the whole pixel buffer without consulting the
    // limits (only `ImageReader::decode` does), so the buffer has to be checked here.
    if decoder.total_bytes() > spec.max_decode_alloc {
        return Err(too_large(raw_width, raw_height));
    }

    // Orientation is cosmetic: unreadable EXIF must not reject an image whose pixels decode.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);

    if source_format == SourceFormat::Jpeg && !jpeg_scan_is_terminated(bytes) {
        // The JPEG decoder pads a truncated scan with grey instead of failing; a half-grey
        // advert must not go live, so truncation is detected from the marker structure.
        return Err(ImageError::corrupt(
            "the JPEG data is truncated (no end-of-image marker)",
        ));
    }

    // For GIF (and animated WebP) this reads only the first frame, so the frame count of an
    // animation does not affect the cost.
    let decoded = DynamicImage::from_decoder(decoder)
        .map_err(|e| decode_error(e, || too_large(raw_width, raw_height)))?;
    Ok(Decoded {
        image: decoded,
        orientation,
        source_format,
    })
}

/// CPU-heavy: callers run it on a blocking thread.
pub fn make_creative(bytes: &[u8], spec: &CreativeSpec) -> Result<Creative, ImageError> {
    let Decoded {
        image: decoded,
        orientation,
        source_format,
    } = decode_source(bytes, spec)?;
    let (raw_width, raw_height) = (decoded.width(), decoded.height());
    let swaps_axes = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (source_width, source_height) = if swaps_axes {
        (raw_height, raw_width)
    } else {
        (raw_width, raw_height)
    };
    // Downscaling before orienting rotates the small image instead of a copy of the full
    // source; the box is swapped accordingly, which gives the same result.
    let (box_width, box_height) = if swaps_axes {
        (spec.max_height.max(1), spec.max_width.max(1))
    } else {
        (spec.max_width.max(1), spec.max_height.max(1))
    };

    // Flattening before resampling keeps the colour of fully transparent pixels (often black)
    // from bleeding into the edges of visible ones.
    let mut fitted = resample::fit_within(flatten_onto_white(decoded), box_width, box_height);
    fitted.apply_orientation(orientation);

    // JPEG has no alpha channel; grey sources stay single-channel, which is smaller.
    let opaque = if fitted.color().has_color() {
        DynamicImage::ImageRgb8(fitted.into_rgb8())
    } else {
        DynamicImage::ImageLuma8(fitted.into_luma8())
    };
    let (width, height) = (opaque.width(), opaque.height());

    // A fresh encoder writes no EXIF, XMP or ICC data, so nothing from the upload survives.
    let jpeg = match &opaque {
        DynamicImage::ImageLuma8(grey) => {
            encode_jpeg(grey.as_raw(), width, height, true, spec.quality)
        }
        other => encode_jpeg(other.as_bytes(), width, height, false, spec.quality),
    }
    .map_err(|e| ImageError::corrupt(format!("re-encoding failed: {e}")))?;

    let digest = Sha256::digest(&jpeg);
    let hash = hex::encode(&digest[..8]);

    Ok(Creative {
        bytes: jpeg,
        mime: SourceFormat::Jpeg.mime(),
        width,
        height,
        hash,
        source_format,
        source_width,
        source_height,
    })
}

/// Baseline JPEG of 8-bit pixels, RGB (or grey when `grey`), at `quality` (clamped to 1..=100),
/// with no metadata.
pub(crate) fn encode_jpeg(
    pixels: &[u8],
    width: u32,
    height: u32,
    grey: bool,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(format!(
            "{width}×{height} is beyond JPEG's 65 535 pixels a side"
        ));
    };
    let mut out = Vec::new();
    let color = if grey {
        jpeg_encoder::ColorType::Luma
    } else {
        jpeg_encoder::ColorType::Rgb
    };
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(pixels, w, h, color)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The upload as an oriented, opaque RGB image whose longer side is at most `max_side` (the
/// source for placement variants). CPU-heavy: callers run it on a blocking thread.
pub fn decode_for_variants(
    bytes: &[u8],
    spec: &CreativeSpec,
    max_side: u32,
) -> Result<::image::RgbImage, ImageError> {
    let Decoded {
        image, orientation, ..
    } = decode_source(bytes, spec)?;
    let max_side = max_side.max(1);
    let mut fitted = resample::fit_within(flatten_onto_white(image), max_side, max_side);
    fitted.apply_orientation(orientation);
    Ok(fitted.into_rgb8())
}

fn decode_error(err: ::image::ImageError, too_large: impl FnOnce() -> ImageError) -> ImageError {
    match err {
        ::image::ImageError::Limits(_) => too_large(),
        other => ImageError::corrupt(other),
    }
}

/// Composites any alpha onto white in place and returns an image whose alpha (if it still has
/// a channel for it) is fully opaque.
fn flatten_onto_white(image: DynamicImage) -> DynamicImage {
    if !image.color().has_alpha() {
        return image;
    }
    let mut rgba = image.into_rgba8();
    for pixel in rgba.pixels_mut() {
        let [r, g, b, a] = pixel.0;
        let blend = |c: u8| {
            let a = u32::from(a);
            let mixed = (u32::from(c) * a + 255 * (255 - a) + 127) / 255;
            u8::try_from(mixed).unwrap_or(u8::MAX)
        };
        pixel.0 = [blend(r), blend(g), blend(b), u8::MAX];
    }
    DynamicImage::ImageRgba8(rgba)
}

/// Whether a JPEG reaches an end-of-image marker after its first scan starts.
///
/// Header segments are skipped by their declared lengths so that an EXIF thumbnail (a whole
/// JPEG inside APP1, with its own EOI) cannot satisfy the check. Inside entropy-coded data an
/// 0xFF byte is always followed by 0x00 or a restart marker, so any FF D9 after the first SOS
/// is a real marker.
fn jpeg_scan_is_terminated(bytes: &[u8]) -> bool {
    const SOS: u8 = 0xDA;
    const EOI: u8 = 0xD9;
    let mut pos = 2; // past SOI, which `sniff` has already seen
    while let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) {
        match marker {
            // Fill byte before a marker.
            0xFF => pos += 1,
            EOI => return true,
            // Markers without a length field.
            0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let (Some(&hi), Some(&lo)) = (bytes.get(pos + 2), bytes.get(pos + 3)) else {
                    return false;
                };
                pos += 2 + usize::from(u16::from_be_bytes([hi, lo]));
                if marker == SOS {
                    break;
                }
            }
        }
    }
    bytes
        .get(pos..)
        .is_some_and(|rest| rest.windows(2).any(|w| w == [0xFF, EOI]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ::image::codecs::gif::GifEncoder;
    use ::image::codecs::jpeg::JpegEncoder;
    use ::image::codecs::webp::WebPEncoder;
    use ::image::{Delay, Frame, Rgb, RgbImage, Rgba, RgbaImage};
    use std::time::{Duration, Instant};

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn gradient(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        }))
    }

    fn jpeg_of(image: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image
            .write_with_encoder(JpegEncoder::new_with_quality(&mut out, 90))
            .unwrap();
        out
    }

    fn decode_output(creative: &Creative) -> DynamicImage {
        assert_eq!(&creative.bytes[..2], &[0xFF, 0xD8]);
        ::image::load_from_memory_with_format(&creative.bytes, ImageFormat::Jpeg).unwrap()
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    }

    /// A structurally valid PNG whose header claims `width`×`height` RGB pixels but whose
    /// image data is a few bytes: what a decompression bomb looks like to a header reader.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        png_chunk(&mut png, b"IHDR", &ihdr);
        // zlib stream holding one empty stored block; Adler-32 of nothing is 1.
        png_chunk(
            &mut png,
            b"IDAT",
            &[
                0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01,
            ],
        );
        png_chunk(&mut png, b"IEND", &[]);
        png
    }

    fn assert_too_large(result: Result<Creative, ImageError>, width: u32, height: u32) {
        match result {
            Err(ImageError::DimensionsTooLarge {
                width: w,
                height: h,
                max_side: 12_000,
                max_pixels: 40_000_000,
            }) => assert_eq!((w, h), (width, height)),
            other => panic!("expected DimensionsTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn large_png_is_fitted_into_the_box() {
        let png = encode(gradient(1200, 800), ImageFormat::Png);
        let creative = make_creative(&png, &CreativeSpec::default()).unwrap();

        let out = decode_output(&creative);
        assert_eq!((out.width(), out.height()), (600, 400));
        assert_eq!((creative.width, creative.height), (600, 400));
        assert_eq!(creative.mime, "image/jpeg");
        assert_eq!(creative.source_format, SourceFormat::Png);
        assert_eq!((creative.source_width, creative.source_height), (1200, 800));
        assert_eq!(creative.hash.len(), 16);
        assert!(creative.hash.chars().all(|c| c.is_ascii_hexdigit()));
        let full = hex::encode(Sha256::digest(&creative.bytes));
        assert_eq!(creative.hash, full[..16]);
    }

    #[test]
    fn small_image_is_not_upscaled() {
        let png = encode(gradient(300, 200), ImageFormat::Png);
        let creative = make_creative(&png, &CreativeSpec::default()).unwrap();
        let out = decode_output(&creative);
        assert_eq!((out.width(), out.height()), (300, 200));
        assert_eq!((creative.width, creative.height), (300, 200));
    }

    #[test]
    fn tall_webp_is_fitted_by_height() {
        let mut webp = Vec::new();
        gradient(400, 1000)
            .write_with_encoder(WebPEncoder::new_lossless(&mut webp))
            .unwrap();
        assert_eq!(sniff(&webp).unwrap(), SourceFormat::WebP);

        let creative = make_creative(&webp, &CreativeSpec::default()).unwrap();
        let out = decode_output(&creative);
        assert_eq!((out.width(), out.height()), (240, 600));
        assert_eq!(creative.source_format, SourceFormat::WebP);
        assert_eq!((creative.source_width, creative.source_height), (400, 1000));
    }

    #[test]
    fn transparency_becomes_white() {
        let png = encode(
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(20, 10, Rgba([0, 0, 0, 0]))),
            ImageFormat::Png,
        );
        let creative = make_creative(&png, &CreativeSpec::default()).unwrap();
        let out = decode_output(&creative).into_rgb8();
        assert_eq!(out.dimensions(), (20, 10));
        for pixel in out.pixels() {
            assert!(pixel.0.iter().all(|&c| c > 240), "pixel {pixel:?}");
        }
    }

    fn gif_of(frames: impl IntoIterator<Item = RgbaImage>) -> Vec<u8> {
        let mut gif = Vec::new();
        {
            let mut encoder = GifEncoder::new_with_speed(&mut gif, 30);
            encoder
                .encode_frames(frames.into_iter().map(|f| {
                    Frame::from_parts(f, 0, 0, Delay::from_saturating_duration(Duration::ZERO))
                }))
                .unwrap();
        }
        gif
    }

    #[test]
    fn single_frame_gif() {
        let gif = gif_of([RgbaImage::from_pixel(30, 20, Rgba([255, 0, 0, 255]))]);
        let creative = make_creative(&gif, &CreativeSpec::default()).unwrap();
        assert_eq!(creative.source_format, SourceFormat::Gif);
        let out = decode_output(&creative).into_rgb8();
        assert_eq!(out.dimensions(), (30, 20));
        let Rgb([r, g, b]) = *out.get_pixel(15, 10);
        assert!(r > 200 && g < 60 && b < 60, "{r} {g} {b}");
    }

    #[test]
    fn animated_gif_uses_only_the_first_frame() {
        let first = RgbaImage::from_pixel(16, 12, Rgba([255, 0, 0, 255]));
        let rest = (0..1999).map(|_| RgbaImage::from_pixel(16, 12, Rgba([0, 0, 255, 255])));
        let gif = gif_of(std::iter::once(first).chain(rest));

        let started = Instant::now();
        let creative = make_creative(&gif, &CreativeSpec::default()).unwrap();
        // Generous bound for slow CI; decoding all frames is not what is being timed away,
        // the colour check below proves which frame was used.
        assert!(started.elapsed() < Duration::from_secs(5));

        let out = decode_output(&creative).into_rgb8();
        assert_eq!(out.dimensions(), (16, 12));
        assert_eq!((creative.source_width, creative.source_height), (16, 12));
        let Rgb([r, g, b]) = *out.get_pixel(8, 6);
        assert!(r > 200 && g < 60 && b < 60, "{r} {g} {b}");
    }

    /// APP1 segment carrying a little-endian TIFF with a single IFD entry: Orientation = `value`.
    fn exif_orientation_segment(value: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"II*\0");
        tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD0 follows the header
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes()); // count
        tiff.extend_from_slice(&value.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding to 4 bytes
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD

        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&tiff);
        let mut segment = vec![0xFF, 0xE1];
        segment.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
        segment.extend_from_slice(&payload);
        segment
    }

    #[test]
    fn exif_orientation_is_applied_and_stripped() {
        // Left half red, right half blue: after a 90° clockwise turn red is on top.
        let source = DynamicImage::ImageRgb8(RgbImage::from_fn(200, 100, |x, _| {
            if x < 100 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        }));
        let plain = jpeg_of(source);
        let mut jpeg = plain[..2].to_vec();
        jpeg.extend_from_slice(&exif_orientation_segment(6));
        jpeg.extend_from_slice(&plain[2..]);

        let creative = make_creative(&jpeg, &CreativeSpec::default()).unwrap();
        let out = decode_output(&creative).into_rgb8();
        assert_eq!(out.dimensions(), (100, 200));
        assert_eq!((creative.width, creative.height), (100, 200));
        assert_eq!((creative.source_width, creative.source_height), (100, 200));
        let Rgb([r, _, b]) = *out.get_pixel(50, 20);
        assert!(r > 200 && b < 60, "top should be red: {r} {b}");
        let Rgb([r, _, b]) = *out.get_pixel(50, 180);
        assert!(r < 60 && b > 200, "bottom should be blue: {r} {b}");
        assert!(!creative.bytes.windows(4).any(|w| w == b"Exif"));
        assert!(!creative.bytes.windows(2).any(|w| w == [0xFF, 0xE1]));
    }

    #[test]
    fn rotated_source_is_fitted_in_display_orientation() {
        let plain = jpeg_of(gradient(1000, 400));
        let mut jpeg = plain[..2].to_vec();
        jpeg.extend_from_slice(&exif_orientation_segment(8));
        jpeg.extend_from_slice(&plain[2..]);

        let creative = make_creative(&jpeg, &CreativeSpec::default()).unwrap();
        let out = decode_output(&creative);
        assert_eq!((out.width(), out.height()), (240, 600));
        assert_eq!((creative.source_width, creative.source_height), (400, 1000));
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        let bomb = png_claiming(50_000, 50_000);
        assert!(bomb.len() < 100);
        let started = Instant::now();
        assert_too_large(
            make_creative(&bomb, &CreativeSpec::default()),
            50_000,
            50_000,
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn over_long_side_is_refused() {
        let png = encode(gradient(12_001, 1), ImageFormat::Png);
        assert_too_large(make_creative(&png, &CreativeSpec::default()), 12_001, 1);
    }

    #[test]
    fn too_many_pixels_is_refused() {
        let png = png_claiming(7_000, 7_000);
        assert_too_large(make_creative(&png, &CreativeSpec::default()), 7_000, 7_000);
    }

    #[test]
    fn decode_buffer_over_alloc_limit_is_refused() {
        let png = encode(gradient(100, 100), ImageFormat::Png);
        let spec = CreativeSpec {
            max_decode_alloc: 10_000,
            ..CreativeSpec::default()
        };
        let err = make_creative(&png, &spec).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::DimensionsTooLarge {
                    width: 100,
                    height: 100,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_jpeg_is_corrupt() {
        let jpeg = jpeg_of(gradient(300, 200));
        let err = make_creative(&jpeg[..jpeg.len() / 2], &CreativeSpec::default()).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err:?}");
        assert_eq!(err.code(), "corrupt");
    }

    #[test]
    fn truncated_jpeg_with_exif_thumbnail_eoi_is_still_corrupt() {
        // An APP1 payload that happens to contain FF D9 must not count as the end of image.
        let jpeg = jpeg_of(gradient(300, 200));
        let mut with_app = jpeg[..2].to_vec();
        with_app.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x08, b'X', b'x', 0xFF, 0xD9, 0, 0]);
        with_app.extend_from_slice(&jpeg[2..jpeg.len() / 2]);
        let err = make_creative(&with_app, &CreativeSpec::default()).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn truncated_png_is_corrupt() {
        let png = encode(gradient(300, 200), ImageFormat::Png);
        let err = make_creative(&png[..png.len() / 2], &CreativeSpec::default()).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn unsupported_and_empty_inputs() {
        let spec = CreativeSpec::default();

        let err = make_creative(&[], &spec).unwrap_err();
        assert!(matches!(err, ImageError::Empty), "{err:?}");
        assert_eq!(err.code(), "empty");

        let random: Vec<u8> = (0u32..512)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let err = make_creative(&random, &spec).unwrap_err();
        assert!(
            matches!(err, ImageError::UnsupportedFormat { detected: None }),
            "{err:?}"
        );
        assert_eq!(err.code(), "unsupported_format");

        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0x46, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0, 0x28, 0, 0, 0]);
        let err = make_creative(&bmp, &spec).unwrap_err();
        match &err {
            ImageError::UnsupportedFormat {
                detected: Some(name),
            } => assert_eq!(name, "bmp"),
            other => panic!("expected bmp, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("bmp") && message.contains("JPEG, PNG, WebP and GIF"));

        let err = make_creative(b"hello, this is not an image\n", &spec).unwrap_err();
        assert!(
            matches!(err, ImageError::UnsupportedFormat { detected: None }),
            "{err:?}"
        );
    }

    #[test]
    fn input_over_byte_limit_is_too_large() {
        let png = encode(gradient(50, 50), ImageFormat::Png);
        let spec = CreativeSpec {
            max_input_bytes: 100,
            ..CreativeSpec::default()
        };
        let err = make_creative(&png, &spec).unwrap_err();
        assert!(
            matches!(err, ImageError::TooLarge { limit: 100 }),
            "{err:?}"
        );
        assert_eq!(err.code(), "too_large");
    }

    #[test]
    fn sniff_ignores_nothing_but_magic_bytes() {
        assert_eq!(sniff(&jpeg_of(gradient(8, 8))).unwrap(), SourceFormat::Jpeg);
        assert_eq!(
            sniff(&encode(gradient(8, 8), ImageFormat::Png)).unwrap(),
            SourceFormat::Png
        );
        assert_eq!(sniff(b"GIF89a\x01\x00").unwrap(), SourceFormat::Gif);
        assert!(matches!(sniff(&[]), Err(ImageError::Empty)));
    }

    #[test]
    fn from_mime_cases() {
        assert_eq!(
            SourceFormat::from_mime("image/jpeg"),
            Some(SourceFormat::Jpeg)
        );
        assert_eq!(
            SourceFormat::from_mime("image/jpg"),
            Some(SourceFormat::Jpeg)
        );
        assert_eq!(
            SourceFormat::from_mime("image/pjpeg"),
            Some(SourceFormat::Jpeg)
        );
        assert_eq!(
            SourceFormat::from_mime("IMAGE/JPEG"),
            Some(SourceFormat::Jpeg)
        );
        assert_eq!(
            SourceFormat::from_mime("image/png"),
            Some(SourceFormat::Png)
        );
        assert_eq!(
            SourceFormat::from_mime(" Image/WebP ; charset=binary"),
            Some(SourceFormat::WebP)
        );
        assert_eq!(
            SourceFormat::from_mime("image/gif"),
            Some(SourceFormat::Gif)
        );
        assert_eq!(SourceFormat::from_mime("image/bmp"), None);
        assert_eq!(SourceFormat::from_mime("text/plain"), None);
        assert_eq!(SourceFormat::from_mime(""), None);
    }

    #[test]
    fn format_names() {
        for (format, mime, ext) in [
            (SourceFormat::Jpeg, "image/jpeg", "jpg"),
            (SourceFormat::Png, "image/png", "png"),
            (SourceFormat::WebP, "image/webp", "webp"),
            (SourceFormat::Gif, "image/gif", "gif"),
        ] {
            assert_eq!(format.mime(), mime);
            assert_eq!(format.extension(), ext);
            assert_eq!(SourceFormat::from_mime(mime), Some(format));
        }
    }

    #[test]
    fn corrupt_reason_is_kept_short() {
        let ImageError::Corrupt { reason } = ImageError::corrupt("x".repeat(1000)) else {
            panic!("not corrupt");
        };
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1);
    }

    #[test]
    fn default_spec() {
        let spec = CreativeSpec::default();
        assert_eq!(
            (spec.max_width, spec.max_height, spec.quality),
            (600, 600, 80)
        );
        assert_eq!(spec.max_input_bytes, 10 * 1024 * 1024);
        assert_eq!(spec.max_source_dimension, 12_000);
        assert_eq!(spec.max_source_pixels, 40_000_000);
        assert_eq!(spec.max_decode_alloc, 256 * 1024 * 1024);
    }
}
