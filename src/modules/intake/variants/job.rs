//! The variants job: renders an advert's placement variants off the request path, in the worker
//! pool, after intake (and again on `reklama variants rebuild`).

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::advert::{CallToAction, OffloadStatus};
use crate::domain::{AdvertStatus, Placement};
use crate::platform::cloud::CloudStore;
use crate::platform::cpu::CpuPool;
use crate::platform::db::{Db, now_ms};
use crate::platform::jobs::JobHandler;

use super::super::creative::{CreativeSpec, SourceFormat, decode_for_variants};
use super::super::offload::{advert_and_original, original_key};
use super::{Outcome, Rect, Rendered, Words, render_all, store, working_side};

/// Crops are planned on the reduced copy; customers read them in the uploaded image's pixels.
fn to_original_pixels(rendered: &mut [Rendered], reduced: (u32, u32), original: (u32, u32)) {
    if reduced.0 == 0 || reduced.1 == 0 || original.0 == 0 || original.1 == 0 {
        return;
    }
    let sx = f64::from(original.0) / f64::from(reduced.0);
    let sy = f64::from(original.1) / f64::from(reduced.1);
    let scale = |v: u32, by: f64, limit: u32| ((f64::from(v) * by).round() as u32).min(limit);
    for r in rendered {
        if let Outcome::Ready(ready) = &mut r.outcome {
            let c = ready.crop;
            let x = scale(c.x, sx, original.0);
            let y = scale(c.y, sy, original.1);
            ready.crop = Rect {
                x,
                y,
                width: scale(c.x + c.width, sx, original.0) - x,
                height: scale(c.y + c.height, sy, original.1) - y,
            };
        }
    }
}

pub struct VariantsJob {
    db: Db,
    cloud: Arc<dyn CloudStore>,
    catalogue: Arc<Vec<Placement>>,
    spec: CreativeSpec,
    /// Renders running at once: at most half the cores (at least one), so that however many
    /// jobs the workers take, the other half stays free for intake (and their memory bounded).
    renders: tokio::sync::Semaphore,
    /// Where renders run: below the request workers' priority.
    cpu: CpuPool,
}

impl VariantsJob {
    pub fn new(
        db: Db,
        cloud: Arc<dyn CloudStore>,
        catalogue: Arc<Vec<Placement>>,
        spec: CreativeSpec,
        cpu: CpuPool,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            db,
            cloud,
            catalogue,
            spec,
            renders: tokio::sync::Semaphore::new((cores / 2).max(1)),
            cpu,
        }
    }
}

#[async_trait]
impl JobHandler for VariantsJob {
    fn kind(&self) -> &'static str {
        super::super::outbox::VARIANTS_JOB
    }

    async fn run(&self, payload: &str) -> Result<(), String> {
        let (advert_id, advert, original) = advert_and_original(&self.db, payload).await?;
        let Some(advert) = advert.filter(|a| a.status != AdvertStatus::Deleted) else {
            return Ok(());
        };
        // The original stays in the database until it is in the cloud store.
        let bytes = match original {
            Some(original) => original.bytes,
            None if advert.offload_status == OffloadStatus::Done => {
                let format =
                    SourceFormat::from_mime(&advert.creative.source_mime).ok_or_else(|| {
                        format!("unknown stored image type {}", advert.creative.source_mime)
                    })?;
                self.cloud
                    .get(&original_key(advert_id, format))
                    .await
                    .map_err(|e| e.to_string())?
            }
            None => {
                return Err(format!(
                    "advert {advert_id}: the original image is not available yet"
                ));
            }
        };
        let catalogue = self.catalogue.clone();
        let spec = self.spec.clone();
        let content = store::Content {
            image_hash: advert.creative.hash.clone(),
            title: advert.title.as_str().to_owned(),
            text: advert.text.as_str().to_owned(),
            cta: advert.cta.as_ref().map(|c| c.as_str().to_owned()),
        };
        let (title, text) = (content.title.clone(), content.text.clone());
        let cta = content
            .cta
            .clone()
            .unwrap_or_else(|| CallToAction::default_for(advert.lang.as_ref(), &title).to_owned());
        let original_size = (advert.creative.source_width, advert.creative.source_height);
        let slot = self
            .renders
            .acquire()
            .await
            .map_err(|e| format!("render slots closed: {e}"))?;
        let rendered = self
            .cpu
            .run(move || {
                decode_for_variants(&bytes, &spec, working_side(&catalogue)).map(|source| {
                    let words = Words {
                        title: &title,
                        text: &text,
                        cta: &cta,
                    };
                    let mut rendered = render_all(&source, &words, &catalogue);
                    to_original_pixels(&mut rendered, source.dimensions(), original_size);
                    rendered
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        drop(slot);
        let ready = rendered
            .iter()
            .filter(|r| matches!(r.outcome, super::Outcome::Ready(_)))
            .count();
        let saved = self
            .db
            .run(move |conn| store::save(conn, advert_id, &content, &rendered, now_ms()))
            .await
            .map_err(|e| e.to_string())?;
        if saved {
            tracing::info!(%advert_id, ready, "placement variants rendered");
        } else {
            tracing::info!(%advert_id, "the advert changed while its variants were rendered; its own job follows");
        }
        Ok(())
    }

    async fn dead_lettered(&self, payload: &str, error: &str) {
        tracing::error!(%payload, %error, "placement variants could not be rendered");
    }
}
