//! Lanczos3 resampling for creatives and placement variants, with the SIMD kernels of
//! fast_image_resize (AVX2 or SSE4.1 where the CPU has them). The image crate's own resize was
//! more than half of what an intake and its renders cost (`perf`, bench/RESULTS.md).

use ::image::DynamicImage;
use ::image::imageops::FilterType;
use fast_image_resize::{ResizeAlg, ResizeOptions, Resizer};

/// `image` resampled to exactly `width`×`height` (each at least 1), Lanczos3, in its own
/// pixel layout.
pub fn exact(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    let (width, height) = (width.max(1), height.max(1));
    let mut out = DynamicImage::new(width, height, image.color());
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(
        fast_image_resize::FilterType::Lanczos3,
    ));
    match Resizer::new().resize(image, &mut out, &options) {
        Ok(()) => out,
        // A layout the SIMD resizer has no kernel for (32-bit float pixels, which none of the
        // accepted formats decode to): the image crate's resize does it.
        Err(_) => image.resize_exact(width, height, FilterType::Lanczos3),
    }
}

/// `image` scaled down, keeping its proportions, to the largest size within
/// `box_width`×`box_height`; unchanged when it already fits.
pub fn fit_within(image: DynamicImage, box_width: u32, box_height: u32) -> DynamicImage {
    let (width, height) = (image.width(), image.height());
    if width <= box_width && height <= box_height {
        return image;
    }
    let (fitted_width, fitted_height) = fitted(width, height, box_width, box_height);
    exact(&image, fitted_width, fitted_height)
}

/// The size of `width`×`height` scaled by the one factor that makes it just fit the box, each
/// side rounded to the nearest pixel and at least 1.
fn fitted(width: u32, height: u32, box_width: u32, box_height: u32) -> (u32, u32) {
    let scale = (f64::from(box_width.max(1)) / f64::from(width.max(1)))
        .min(f64::from(box_height.max(1)) / f64::from(height.max(1)));
    let side = |length: u32| {
        let scaled = (f64::from(length) * scale).round();
        // Within the box by construction; the clamp only keeps the cast honest.
        scaled.clamp(1.0, f64::from(u32::MAX)) as u32
    };
    (side(width), side(height))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ::image::{GenericImageView, Rgb, RgbImage, Rgba, RgbaImage};

    use super::*;

    #[test]
    fn fitting_keeps_the_proportions_and_touches_the_box() {
        assert_eq!(fitted(1200, 900, 600, 600), (600, 450));
        assert_eq!(fitted(900, 1200, 600, 600), (450, 600));
        assert_eq!(fitted(4000, 10, 600, 600), (600, 2));
        assert_eq!(
            fitted(10_000, 1, 600, 600),
            (600, 1),
            "never below one pixel"
        );
        assert_eq!(
            fitted(1000, 333, 300, 300),
            (300, 100),
            "rounded, not truncated"
        );
    }

    #[test]
    fn an_image_within_the_box_is_left_as_it_is() {
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 200, Rgb([1, 2, 3])));
        let same = fit_within(image.clone(), 600, 600);
        assert_eq!(same, image);
    }

    #[test]
    fn resampling_keeps_the_layout_and_the_colours() {
        // Left half red, right half blue: the halves stay pure away from the seam.
        let source = RgbImage::from_fn(800, 400, |x, _| {
            if x < 400 {
                Rgb([200, 10, 10])
            } else {
                Rgb([10, 10, 200])
            }
        });
        let out = fit_within(DynamicImage::ImageRgb8(source), 200, 200);
        assert_eq!((out.width(), out.height()), (200, 100));
        assert!(matches!(out, DynamicImage::ImageRgb8(_)));
        assert_eq!(out.get_pixel(10, 50), Rgba([200, 10, 10, 255]));
        assert_eq!(out.get_pixel(190, 50), Rgba([10, 10, 200, 255]));
        let seam = out.get_pixel(100, 50);
        assert!(
            seam[0] > 10 && seam[0] < 200,
            "the seam is a blend: {seam:?}"
        );

        let grey = DynamicImage::ImageLuma16(::image::ImageBuffer::from_pixel(
            64,
            64,
            ::image::Luma([40_000u16]),
        ));
        let out = exact(&grey, 16, 8);
        assert!(matches!(out, DynamicImage::ImageLuma16(_)));
        assert_eq!(out.as_luma16().unwrap().get_pixel(3, 3).0, [40_000]);

        let float = DynamicImage::ImageRgba32F(
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(40, 40, Rgba([0, 255, 0, 255])))
                .into_rgba32f(),
        );
        let out = exact(&float, 10, 20);
        assert_eq!((out.width(), out.height()), (10, 20));
        assert_eq!(out.get_pixel(5, 5), Rgba([0, 255, 0, 255]));
    }
}
