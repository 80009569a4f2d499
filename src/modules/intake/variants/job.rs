//! The variants job: renders an advert's placement variants off the request path, in the worker
//! pool, after intake (and again on `reklama variants rebuild`).

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::advert::{CallToAction, OffloadStatus};
use crate::domain::creative::{CreativeId, MAX_COMPOSED, composed_choice};
use crate::domain::placement::Layout;
use crate::domain::{AdvertId, AdvertStatus, Placement};
use crate::platform::cloud::CloudStore;
use crate::platform::cpu::CpuPool;
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::jobs::JobHandler;

use super::super::CreativeTallies;
use super::super::creative::{CreativeSpec, ImageError, SourceFormat, decode_for_variants};
use super::super::creatives::{CreativeRow, servable_rows};
use super::super::offload::{advert_and_original, original_key};
use super::super::outbox::VARIANTS_JOB;
use super::super::store::{find_more_original, stored_list};
use super::{Outcome, Rect, Rendered, Words, render_advert, store, working_side};

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

/// How often an advert with more servable creatives than its composed placements are drawn for
/// is looked at again: if the counts since have changed which creatives are likeliest to win,
/// the placements are drawn for those.
pub const REVIEW_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The variants job's payload: the advert, and whether this run is a periodic review (which
/// renders only if the choice of composed creatives changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct VariantsPayload {
    advert_id: AdvertId,
    #[serde(default)]
    review: bool,
}

pub struct VariantsJob {
    db: Db,
    cloud: Arc<dyn CloudStore>,
    catalogue: Arc<Vec<Placement>>,
    spec: CreativeSpec,
    tallies: Arc<dyn CreativeTallies>,
    max_attempts: u32,
    /// Renders running at once: at most half the cores (at least one), so that however many
    /// jobs the workers take, the other half stays free for intake (and their memory bounded).
    renders: tokio::sync::Semaphore,
    /// Where renders run: below the request workers' priority.
    cpu: CpuPool,
}

/// What the job needs besides the database, the store and the machine.
pub struct VariantsSetup {
    pub catalogue: Arc<Vec<Placement>>,
    pub spec: CreativeSpec,
    pub tallies: Arc<dyn CreativeTallies>,
    pub max_attempts: u32,
}

impl VariantsJob {
    pub fn new(db: Db, cloud: Arc<dyn CloudStore>, setup: VariantsSetup, cpu: CpuPool) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            db,
            cloud,
            catalogue: setup.catalogue,
            spec: setup.spec,
            tallies: setup.tallies,
            max_attempts: setup.max_attempts,
            renders: tokio::sync::Semaphore::new((cores / 2).max(1)),
            cpu,
        }
    }

    /// The creatives the composed placements are to be drawn for (none without composed
    /// placements), and whether the advert has more servable ones than that.
    async fn composed_choice(&self, advert: AdvertId) -> Result<(Vec<CreativeRow>, bool), String> {
        if !self.catalogue.iter().any(|p| p.layout == Layout::Composed) {
            return Ok((Vec::new(), false));
        }
        let servable = self
            .db
            .run(move |conn| servable_rows(conn, advert).map_err(DbError::from))
            .await
            .map_err(|e| e.to_string())?;
        if servable.len() <= MAX_COMPOSED {
            return Ok((servable, false));
        }
        // Without counts (the database just failed), the first ones by number: the review
        // comes back to it.
        let tallies = self.tallies.tallies(advert).await.unwrap_or_else(|e| {
            tracing::warn!(%advert, error = %e, "creative counts unavailable; composed placements drawn for the first creatives");
            Default::default()
        });
        let ids: Vec<CreativeId> = servable.iter().map(CreativeRow::id).collect();
        let chosen = composed_choice(&ids, |id| tallies.get(&id).copied().unwrap_or_default());
        let rows = servable
            .into_iter()
            .filter(|r| chosen.contains(&r.id()))
            .collect();
        Ok((rows, true))
    }

    /// Queues the advert's next review, unless one is waiting.
    async fn schedule_review(&self, advert_id: AdvertId) -> Result<(), String> {
        let payload = serde_json::to_string(&VariantsPayload {
            advert_id,
            review: true,
        })
        .map_err(|e| e.to_string())?;
        let attempts = self.max_attempts;
        let at = now_ms() + i64::try_from(REVIEW_EVERY.as_millis()).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| {
                crate::platform::jobs::enqueue_once_at(conn, VARIANTS_JOB, &payload, attempts, at)
                    .map_err(DbError::from)
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[async_trait]
impl JobHandler for VariantsJob {
    fn kind(&self) -> &'static str {
        VARIANTS_JOB
    }

    async fn run(&self, payload: &str) -> Result<(), String> {
        let VariantsPayload { review, .. } =
            serde_json::from_str(payload).map_err(|e| format!("bad payload {payload:?}: {e}"))?;
        let (advert_id, advert, original) = advert_and_original(&self.db, payload).await?;
        let Some(advert) = advert.filter(|a| a.status != AdvertStatus::Deleted) else {
            return Ok(());
        };
        let (composed, more_than_drawn) = self.composed_choice(advert_id).await?;
        if review {
            let fingerprints: Vec<String> =
                self.catalogue.iter().map(Placement::fingerprint).collect();
            let drawn = self
                .db
                .run(move |conn| store::composed_creatives(conn, advert_id, &fingerprints))
                .await
                .map_err(|e| e.to_string())?;
            let wanted = composed.iter().map(|r| r.number).collect();
            if drawn == Some(wanted) {
                if more_than_drawn {
                    self.schedule_review(advert_id).await?;
                }
                return Ok(());
            }
        }
        // The first image's original stays in the database until it is in the cloud store; the
        // others' stay in the database.
        let first = match original {
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
        let mut originals = vec![(
            first,
            advert.creative.source_width,
            advert.creative.source_height,
        )];
        for (i, image) in advert.more_images.iter().enumerate() {
            let index = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let bytes = self
                .db
                .run(move |conn| find_more_original(conn, advert_id, index))
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("advert {advert_id}: image {index} has no original"))?;
            originals.push((bytes, image.source_width, image.source_height));
        }
        let catalogue = self.catalogue.clone();
        let spec = self.spec.clone();
        let content = store::Content {
            image_hashes: advert.images().map(|i| i.hash.clone()).collect(),
            title: advert.title.as_str().to_owned(),
            text: advert.text.as_str().to_owned(),
            more_titles: stored_list(&advert.more_titles),
            more_texts: stored_list(&advert.more_texts),
            cta: advert.cta.as_ref().map(|c| c.as_str().to_owned()),
        };
        let (title, text) = (content.title.clone(), content.text.clone());
        let cta = content
            .cta
            .clone()
            .unwrap_or_else(|| CallToAction::default_for(advert.lang.as_ref(), &title).to_owned());
        let slot = self
            .renders
            .acquire()
            .await
            .map_err(|e| format!("render slots closed: {e}"))?;
        let rendered = self
            .cpu
            .run(move || {
                let first = Words {
                    title: &title,
                    text: &text,
                    cta: &cta,
                };
                let mut all = Vec::new();
                // One image decoded at a time: memory stays that of one photograph.
                for (index, (bytes, width, height)) in originals.iter().enumerate() {
                    let image = u32::try_from(index).unwrap_or(u32::MAX);
                    let source = decode_for_variants(bytes, &spec, working_side(&catalogue))?;
                    let drawn: Vec<(CreativeId, Words<'_>)> = composed
                        .iter()
                        .filter(|r| usize::try_from(r.image_index) == Ok(index))
                        .map(|r| {
                            let words = Words {
                                title: &r.title,
                                text: &r.body,
                                cta: &cta,
                            };
                            (r.id(), words)
                        })
                        .collect();
                    let mut rendered = render_advert(&source, image, &first, &drawn, &catalogue);
                    to_original_pixels(&mut rendered, source.dimensions(), (*width, *height));
                    all.extend(rendered);
                }
                Ok::<_, ImageError>(all)
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
        if more_than_drawn {
            self.schedule_review(advert_id).await?;
        }
        Ok(())
    }

    async fn dead_lettered(&self, payload: &str, error: &str) {
        tracing::error!(%payload, %error, "placement variants could not be rendered");
    }
}
