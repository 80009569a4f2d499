//! Choosing the part of the source image a placement shows: the window of the placement's
//! aspect ratio that holds the most of the image's salient detail (edges, colour, skin tones),
//! centred on that detail, or a refusal when no crop would look right.

use image::RgbImage;

use crate::modules::intake::resample;

/// A rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// The area `self` shares with `other`.
    pub fn overlap(&self, other: &Rect) -> u64 {
        let w = (self.x + self.width)
            .min(other.x + other.width)
            .saturating_sub(self.x.max(other.x));
        let h = (self.y + self.height)
            .min(other.y + other.height)
            .saturating_sub(self.y.max(other.y));
        u64::from(w) * u64::from(h)
    }
}

/// `rect` of `source` resized to exactly `width`×`height` (Lanczos3, [`resample::exact`]).
pub fn cut_and_fit(source: &RgbImage, rect: Rect, width: u32, height: u32) -> RgbImage {
    let row = source.width() as usize * 3;
    let (x0, x1) = (rect.x as usize * 3, (rect.x + rect.width) as usize * 3);
    let mut raw = Vec::with_capacity((x1 - x0) * rect.height as usize);
    for y in rect.y as usize..(rect.y + rect.height) as usize {
        raw.extend_from_slice(&source.as_raw()[y * row + x0..y * row + x1]);
    }
    let Some(cut) = RgbImage::from_raw(rect.width, rect.height, raw) else {
        return RgbImage::new(width, height);
    };
    if (rect.width, rect.height) == (width, height) {
        return cut;
    }
    resample::exact(&image::DynamicImage::ImageRgb8(cut), width, height).into_rgb8()
}

/// A quick box-filtered copy of exactly `width`×`height`. It goes through `DynamicImage`, whose
/// code the image crate compiles itself (generic calls would be compiled, unoptimised in tests,
/// in ours).
pub fn thumbnail(source: &RgbImage, width: u32, height: u32) -> RgbImage {
    image::DynamicImage::ImageRgb8(source.clone())
        .thumbnail_exact(width, height)
        .into_rgb8()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Crop(Rect),
    /// No good variant can be made; the reason is shown to the customer.
    Unsuitable(String),
}

/// The source may be enlarged at most this much.
const MAX_UPSCALE: f64 = 2.0;
/// A crop must keep at least this share of the source's area: a 9:16 portrait keeps 29% in a
/// 1.91:1 social card, a band feeds show as well; a 16:10 photo keeps 25% in a 6.4:1 banner, a
/// sliver (composed layouts put such units' picture in a frame of its own).
const MIN_KEPT_AREA: f64 = 0.28;
/// Below this mean luminance step between neighbouring pixels (0–255 scale) the image has no
/// structure worth aiming at.
const FLAT_DETAIL: f64 = 0.5;
/// A map pixel standing out from the average by less than this (a luminance step of 10, or a
/// colour as saturated as 20 grey levels) is not a subject.
const PEAK_DETAIL: f64 = 10.0;
/// The saliency map's longest side: fine enough to see a few-pixel texture in a 2400 px source.
const MAP_SIDE: u32 = 512;
/// A window re-centred on its detail is taken when it keeps at least this share of the best
/// window's detail.
const RECENTRE_KEEP: f64 = 0.97;

/// Where the detail of an image is: a reduced copy's per-pixel saliency as summed-area tables
/// (saliency, and saliency times x and y for centroids), computed once per source and shared by
/// every placement's plan.
pub struct Saliency {
    source: (u32, u32),
    /// Map pixels.
    width: usize,
    height: usize,
    /// Source pixels per map pixel, across and down.
    scale: (f64, f64),
    flat: bool,
    sum: Vec<f64>,
    sum_x: Vec<f64>,
    sum_y: Vec<f64>,
}

impl Saliency {
    pub fn of(source: &RgbImage) -> Self {
        let (sw, sh) = source.dimensions();
        let calm = detail(source) < FLAT_DETAIL;
        let small = if sw.max(sh) > MAP_SIDE {
            // The same reduction both ways, so the map keeps the image's shape.
            let fit = |n: u32| {
                ((f64::from(n) * f64::from(MAP_SIDE) / f64::from(sw.max(sh))).round() as u32).max(1)
            };
            thumbnail(source, fit(sw), fit(sh))
        } else {
            source.clone()
        };
        let (w, h) = (small.width() as usize, small.height() as usize);
        let scale = (
            f64::from(sw) / (w.max(1) as f64),
            f64::from(sh) / (h.max(1) as f64),
        );
        let luma: Vec<f64> = small
            .pixels()
            .map(|p| {
                0.299 * f64::from(p.0[0]) + 0.587 * f64::from(p.0[1]) + 0.114 * f64::from(p.0[2])
            })
            .collect();
        let mut raw = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let l = luma[i];
                let dx = if x + 1 < w {
                    (luma[i + 1] - l).abs()
                } else {
                    0.0
                };
                let dy = if y + 1 < h {
                    (luma[i + w] - l).abs()
                } else {
                    0.0
                };
                let [r, g, b] = small.as_raw()[i * 3..i * 3 + 3] else {
                    continue;
                };
                let saturation = f64::from(r.max(g).max(b) - r.min(g).min(b));
                let skin = r > 95 && g > 40 && b > 20 && r > g && r > b && r - g > 15;
                raw[i] = dx + dy + 0.5 * saturation + if skin { 30.0 } else { 0.0 };
            }
        }
        // Only what stands out from the image's own average counts: a sky's gentle gradient
        // spread over a wide window must not outweigh a small busy subject.
        let mean = raw.iter().sum::<f64>() / raw.len().max(1) as f64;
        // Calm on average and nowhere a clear edge or colour: nothing to aim at. (A small busy
        // subject on a plain ground is calm on average, but has its peak.)
        let peak = raw.iter().fold(0.0_f64, |m, &s| m.max(s - mean));
        let flat = calm && peak < PEAK_DETAIL;
        let stride = w + 1;
        let mut sum = vec![0.0; stride * (h + 1)];
        let mut sum_x = sum.clone();
        let mut sum_y = sum.clone();
        for y in 0..h {
            let (mut row, mut row_x, mut row_y) = (0.0, 0.0, 0.0);
            for x in 0..w {
                let s = (raw[y * w + x] - mean).max(0.0);
                row += s;
                row_x += s * (x as f64 + 0.5);
                row_y += s * (y as f64 + 0.5);
                let at = (y + 1) * stride + x + 1;
                sum[at] = sum[at - stride] + row;
                sum_x[at] = sum_x[at - stride] + row_x;
                sum_y[at] = sum_y[at - stride] + row_y;
            }
        }
        Self {
            source: (sw, sh),
            width: w,
            height: h,
            scale,
            flat,
            sum,
            sum_x,
            sum_y,
        }
    }

    fn area(table: &[f64], stride: usize, x: usize, y: usize, w: usize, h: usize) -> f64 {
        table[(y + h) * stride + x + w] - table[y * stride + x + w] - table[(y + h) * stride + x]
            + table[y * stride + x]
    }

    /// The top-left corner, in map pixels, of the `w`×`h` window with the most detail, moved to
    /// centre that detail when doing so loses almost none of it.
    fn best_window(&self, w: usize, h: usize) -> (usize, usize) {
        let stride = self.width + 1;
        let (max_x, max_y) = (self.width - w, self.height - h);
        let (cx, cy) = (max_x as f64 / 2.0, max_y as f64 / 2.0);
        let mut best = (max_x / 2, max_y / 2);
        let mut best_score = f64::MIN;
        for y in 0..=max_y {
            for x in 0..=max_x {
                // Among equal windows, the one nearest the middle.
                let off_centre = (x as f64 - cx).abs() + (y as f64 - cy).abs();
                let score = Self::area(&self.sum, stride, x, y, w, h) - off_centre * 1e-9;
                if score > best_score {
                    best_score = score;
                    best = (x, y);
                }
            }
        }
        let total = Self::area(&self.sum, stride, best.0, best.1, w, h);
        if total <= 0.0 {
            return best;
        }
        let mx = Self::area(&self.sum_x, stride, best.0, best.1, w, h) / total;
        let my = Self::area(&self.sum_y, stride, best.0, best.1, w, h) / total;
        let centred = (
            ((mx - w as f64 / 2.0).round().max(0.0) as usize).min(max_x),
            ((my - h as f64 / 2.0).round().max(0.0) as usize).min(max_y),
        );
        if Self::area(&self.sum, stride, centred.0, centred.1, w, h) >= total * RECENTRE_KEEP {
            centred
        } else {
            best
        }
    }
}

/// Plans the crop of `source` for a `width`×`height` placement.
#[cfg(test)]
pub fn plan(source: &RgbImage, width: u32, height: u32) -> Plan {
    plan_with(&Saliency::of(source), width, height)
}

/// Plans a `width`×`height` crop from a source's saliency.
pub fn plan_with(saliency: &Saliency, width: u32, height: u32) -> Plan {
    let (sw, sh) = saliency.source;
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
    let centre = Rect {
        x: (sw - cw) / 2,
        y: (sh - ch) / 2,
        width: cw,
        height: ch,
    };
    if saliency.flat || saliency.width == 0 || saliency.height == 0 {
        return Plan::Crop(centre);
    }
    let to_map = |n: u32, scale: f64, limit: usize| {
        ((f64::from(n) / scale).round() as usize).clamp(1, limit)
    };
    let (ww, wh) = (
        to_map(cw, saliency.scale.0, saliency.width),
        to_map(ch, saliency.scale.1, saliency.height),
    );
    let (mx, my) = saliency.best_window(ww, wh);
    let to_source =
        |n: usize, scale: f64, limit: u32| ((n as f64 * scale).round() as u32).min(limit);
    Plan::Crop(Rect {
        x: to_source(mx, saliency.scale.0, sw - cw),
        y: to_source(my, saliency.scale.1, sh - ch),
        width: cw,
        height: ch,
    })
}

/// Mean absolute luminance difference between horizontal and vertical neighbours, measured on a
/// copy at most 64 pixels a side (cheap, and blind to sensor noise).
fn detail(source: &RgbImage) -> f64 {
    let small = thumbnail(source, 64, 64);
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
pub(crate) mod tests {
    use super::*;

    /// A calm gradient "sky" with one busy, colourful region (a high-detail subject).
    pub(crate) fn scene(width: u32, height: u32, subject: Rect) -> RgbImage {
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
