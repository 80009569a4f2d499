//! Choosing the part of the source image a placement shows: the most interesting region of the
//! placement's aspect ratio (content-aware, smartcrop2's edge, saturation and skin scoring), or a
//! refusal when no crop would look right.

use std::num::NonZeroU32;

use image::RgbImage;

/// A rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Crop(Rect),
    /// No good variant can be made; the reason is shown to the customer.
    Unsuitable(String),
}

/// The source may be enlarged at most this much.
const MAX_UPSCALE: f64 = 2.0;
/// A crop must keep at least this share of the source's area.
const MIN_KEPT_AREA: f64 = 0.3;
/// Below this mean luminance step between neighbouring pixels (0–255 scale) the image has no
/// structure worth aiming at.
const FLAT_DETAIL: f64 = 0.5;

/// Plans the crop of `source` for a `width`×`height` placement.
pub fn plan(source: &RgbImage, width: u32, height: u32) -> Plan {
    let (sw, sh) = source.dimensions();
    if sw == 0 || sh == 0 || width == 0 || height == 0 {
        return Plan::Unsuitable("the image or the placement has no area".into());
    }
    // The largest rectangle of the placement's aspect ratio inside the source.
    let target_ratio = f64::from(width) / f64::from(height);
    let (cw, ch) = if f64::from(sw) / f64::from(sh) > target_ratio {
        (
            ((f64::from(sh) * target_ratio).round() as u32).clamp(1, sw),
            sh,
        )
    } else {
        (
            sw,
            ((f64::from(sw) / target_ratio).round() as u32).clamp(1, sh),
        )
    };
    let upscale = f64::from(width) / f64::from(cw);
    if upscale > MAX_UPSCALE {
        return Plan::Unsuitable(format!(
            "the image is {sw}×{sh}: too small for {width}×{height} (it would be enlarged {upscale:.1}×; \
             at most {MAX_UPSCALE}× keeps it sharp)"
        ));
    }
    let kept = f64::from(cw) * f64::from(ch) / (f64::from(sw) * f64::from(sh));
    if kept < MIN_KEPT_AREA {
        return Plan::Unsuitable(format!(
            "fitting {width}×{height} would keep only {:.0}% of the {sw}×{sh} image",
            kept * 100.0
        ));
    }
    if (cw, ch) == (sw, sh) {
        return Plan::Crop(Rect {
            x: 0,
            y: 0,
            width: sw,
            height: sh,
        });
    }
    let (Some(rw), Some(rh)) = (NonZeroU32::new(width), NonZeroU32::new(height)) else {
        return Plan::Unsuitable("the placement has no area".into());
    };
    let centre = Rect {
        x: (sw - cw) / 2,
        y: (sh - ch) / 2,
        width: cw,
        height: ch,
    };
    if detail(source) < FLAT_DETAIL {
        return Plan::Crop(centre);
    }
    match smartcrop::find_best_crop(source, rw, rh) {
        Ok(best) => {
            let c = best.crop;
            // smartcrop answers in source pixels; keep it inside the image and at our size.
            let x = c.x.min(sw - cw);
            let y = c.y.min(sh - ch);
            Plan::Crop(Rect {
                x,
                y,
                width: cw,
                height: ch,
            })
        }
        Err(_) => Plan::Crop(centre),
    }
}

/// Mean absolute luminance difference between horizontal and vertical neighbours, measured on a
/// copy at most 64 pixels a side (cheap, and blind to sensor noise).
fn detail(source: &RgbImage) -> f64 {
    let small = image::imageops::thumbnail(source, 64, 64);
    let luma = |x: u32, y: u32| {
        let p = small.get_pixel(x, y).0;
        0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
    };
    let (w, h) = small.dimensions();
    let mut sum = 0.0;
    let mut n = 0u32;
    for y in 0..h {
        for x in 0..w {
            if x + 1 < w {
                sum += (luma(x, y) - luma(x + 1, y)).abs();
                n += 1;
            }
            if y + 1 < h {
                sum += (luma(x, y) - luma(x, y + 1)).abs();
                n += 1;
            }
        }
    }
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A calm gradient "sky" with one busy, colourful region (a high-detail subject).
    fn scene(width: u32, height: u32, subject: Rect) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let inside = x >= subject.x
                && x < subject.x + subject.width
                && y >= subject.y
                && y < subject.y + subject.height;
            if inside {
                // Checkerboard of saturated colours: edges and saturation everywhere.
                if (x / 4 + y / 4) % 2 == 0 {
                    image::Rgb([220, 30, 40])
                } else {
                    image::Rgb([30, 200, 60])
                }
            } else {
                let shade = 120 + (y * 60 / height) as u8;
                image::Rgb([shade, shade, shade + 10])
            }
        })
    }

    fn centre_of(r: Rect) -> (u32, u32) {
        (r.x + r.width / 2, r.y + r.height / 2)
    }

    #[test]
    fn the_crop_frames_the_detailed_region() {
        // A wide photo with its subject near the right edge, cropped to a tall half-page.
        let subject = Rect {
            x: 900,
            y: 200,
            width: 200,
            height: 300,
        };
        let img = scene(1200, 800, subject);
        let Plan::Crop(rect) = plan(&img, 300, 600) else {
            panic!("expected a crop")
        };
        assert_eq!((rect.width, rect.height), (400, 800));
        // The subject lies wholly inside the crop...
        assert!(
            rect.x <= subject.x && rect.x + rect.width >= subject.x + subject.width,
            "{rect:?}"
        );
        // ...and a blind centre crop (x = 400) would have missed it.
        assert!(rect.x >= 700, "{rect:?}");
        let (cx, _) = centre_of(rect);
        assert!(cx > 800, "{rect:?}");
    }

    #[test]
    fn a_structureless_image_is_cropped_in_the_centre() {
        let img = RgbImage::from_pixel(1000, 500, image::Rgb([128, 128, 128]));
        assert_eq!(
            plan(&img, 250, 250),
            Plan::Crop(Rect {
                x: 250,
                y: 0,
                width: 500,
                height: 500
            })
        );
    }

    #[test]
    fn a_source_far_smaller_than_the_placement_is_unsuitable() {
        let img = scene(
            300,
            200,
            Rect {
                x: 100,
                y: 50,
                width: 50,
                height: 50,
            },
        );
        let Plan::Unsuitable(reason) = plan(&img, 1200, 628) else {
            panic!("expected unsuitable")
        };
        assert!(reason.contains("too small"), "{reason}");
    }

    #[test]
    fn a_crop_that_keeps_too_little_is_unsuitable() {
        // A square image into a 728×90 leaderboard keeps 12% of it.
        let img = scene(
            800,
            800,
            Rect {
                x: 300,
                y: 300,
                width: 100,
                height: 100,
            },
        );
        let Plan::Unsuitable(reason) = plan(&img, 728, 90) else {
            panic!("expected unsuitable")
        };
        assert!(reason.contains("keep only 12%"), "{reason}");
    }

    #[test]
    fn the_same_aspect_ratio_keeps_the_whole_image() {
        let img = scene(
            600,
            500,
            Rect {
                x: 0,
                y: 0,
                width: 10,
                height: 10,
            },
        );
        assert_eq!(
            plan(&img, 300, 250),
            Plan::Crop(Rect {
                x: 0,
                y: 0,
                width: 600,
                height: 500
            })
        );
    }
}
