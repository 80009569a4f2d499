//! Render time of placement variants, as the variants job spends it: per composed creative, and
//! per advert (decoding the upload and all seven placements of the standard catalogue).
//!
//! `cargo run --release --example render_time [ROUNDS]` prints a Markdown table for
//! bench/RESULTS.md. One thread, like one render slot of the image pool.
#![expect(
    clippy::expect_used,
    reason = "a bench binary: a failure is its answer"
)]

use std::time::{Duration, Instant};

use reklama::domain::Placement;
use reklama::domain::placement::Layout;
use reklama::modules::intake::CreativeSpec;
use reklama::modules::intake::bench_entry::{
    Outcome, Saliency, Words, decode_for_variants, render, render_all, working_side,
};

/// The allocator reklama's binary uses, so the times are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A photograph-like JPEG: sky, sea and sand with a coarse texture and a sun.
fn photo(width: u32, height: u32) -> Vec<u8> {
    let (cx, cy, r) = (width / 3, height / 3, width.min(height) / 8);
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        let texture = ((x / 16 * 7 + y / 16 * 13) % 8) as u8;
        let base = if x.abs_diff(cx).pow(2) + y.abs_diff(cy).pow(2) < r * r {
            [250, 200, 60]
        } else if y < height / 2 {
            [100, 150 + (y * 80 / height) as u8, 230]
        } else if y < height * 3 / 4 {
            [30, 90, 160]
        } else {
            [220, 200, 150]
        };
        image::Rgb(base.map(|c| c.saturating_add(texture)))
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode the test photo");
    out.into_inner()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(15)
        .max(1);
    let catalogue = Placement::standard_catalogue();
    let spec = CreativeSpec::default();
    let words = Words {
        title: "Summer in Sochi: seven nights by the sea",
        text: "Seven nights by the sea, flights and breakfast included.",
        cta: "Book now",
    };
    println!("| source | what | median ms | rounds |");
    println!("|---|---|---:|---:|");
    for (w, h) in [(4000, 2250), (2250, 4000)] {
        let upload = photo(w, h);
        let mut per_advert = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let source = decode_for_variants(&upload, &spec, working_side(&catalogue))
                .expect("decode the test photo");
            let rendered = render_all(&source, &words, &catalogue);
            per_advert.push(started.elapsed());
            assert!(
                rendered
                    .iter()
                    .all(|r| matches!(r.outcome, Outcome::Ready(_)))
            );
        }
        println!(
            "| {w}×{h} JPEG | per advert: decode + 7 placements | {} | {rounds} |",
            ms(median(per_advert))
        );
        let source = decode_for_variants(&upload, &spec, working_side(&catalogue))
            .expect("decode the test photo");
        let mut saliency_times = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let _ = Saliency::of(&source);
            saliency_times.push(started.elapsed());
        }
        println!(
            "| {w}×{h} JPEG | saliency map (once per advert) | {} | {rounds} |",
            ms(median(saliency_times))
        );
        let saliency = Saliency::of(&source);
        for placement in &catalogue {
            let mut times = Vec::new();
            for _ in 0..rounds {
                let started = Instant::now();
                let outcome = render(&source, &saliency, &words, placement);
                times.push(started.elapsed());
                assert!(matches!(outcome, Outcome::Ready(_)));
            }
            let layout = match placement.layout {
                Layout::Crop => "crop",
                Layout::Composed => "composed",
            };
            println!(
                "| {w}×{h} JPEG | {} {}×{} ({layout}, encoded) | {} | {rounds} |",
                placement.name,
                placement.width,
                placement.height,
                ms(median(times))
            );
        }
    }
}
