//! The offload job: copies an advert's full JSON and its original image to the cloud store, then
//! drops the staged original from the database. Safe to run any number of times.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::AdvertId;
use crate::domain::advert::{OffloadStatus, time_from_ms};
use crate::platform::cloud::CloudStore;
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::jobs::JobHandler;

use super::creative::SourceFormat;
use super::outbox::{CLONE_SYNC_JOB, CopyJob, OFFLOAD_JOB, OffloadPayload};
use super::store;

/// The advert a job payload names, with its staged original when it is still in the database.
pub(super) async fn advert_and_original(
    db: &Db,
    payload: &str,
) -> Result<
    (
        AdvertId,
        Option<crate::domain::Advert>,
        Option<store::Original>,
    ),
    String,
> {
    let OffloadPayload { advert_id } =
        serde_json::from_str(payload).map_err(|e| format!("bad payload {payload:?}: {e}"))?;
    let (advert, original) = db
        .run(move |conn| {
            let advert = store::find_advert(conn, advert_id, None)?;
            let original = store::find_original(conn, advert_id)?;
            Ok::<_, DbError>((advert, original))
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok((advert_id, advert, original))
}

/// Object keys of an advert's clone: `adverts/{id}.json` and the original beside it.
pub fn clone_key(id: AdvertId) -> String {
    format!("adverts/{id}.json")
}

pub fn original_key(id: AdvertId, format: SourceFormat) -> String {
    format!("adverts/{id}.{}", format.extension())
}

pub struct OffloadJob {
    db: Db,
    cloud: Arc<dyn CloudStore>,
}

impl OffloadJob {
    pub fn new(db: Db, cloud: Arc<dyn CloudStore>) -> Self {
        Self { db, cloud }
    }
}

#[async_trait]
impl JobHandler for OffloadJob {
    fn kind(&self) -> &'static str {
        OFFLOAD_JOB
    }

    async fn run(&self, payload: &str) -> Result<(), String> {
        let (advert_id, advert, original) = advert_and_original(&self.db, payload).await?;
        let Some(mut advert) = advert else {
            tracing::info!(%advert_id, "advert is gone; nothing to offload");
            return Ok(());
        };
        if advert.offload_status == OffloadStatus::Done {
            return Ok(());
        }
        let image_hash = advert.creative.hash.clone();
        let Some(store::Original { mime, bytes }) = original else {
            return Err(format!("advert {advert_id}: original image is missing"));
        };
        let format = SourceFormat::from_mime(&mime)
            .ok_or_else(|| format!("advert {advert_id}: unknown stored image type {mime}"))?;
        self.cloud
            .put(&original_key(advert_id, format), bytes)
            .await
            .map_err(|e| e.to_string())?;
        // Read again: a change made while the original was uploading belongs in the clone.
        if let Some(latest) = self
            .db
            .run(move |conn| store::find_advert(conn, advert_id, None))
            .await
            .map_err(|e| e.to_string())?
        {
            advert = latest;
        }
        // The clone describes the advert as it is once this job commits.
        let at = now_ms();
        advert.offload_status = OffloadStatus::Done;
        advert.offloaded_at = Some(time_from_ms(at));
        let json = serde_json::to_vec_pretty(&advert).map_err(|e| e.to_string())?;
        self.cloud
            .put(&clone_key(advert_id), json)
            .await
            .map_err(|e| e.to_string())?;
        // The original uploaded is the one staged when the advert was first read here.
        let uploaded = image_hash;
        let marked = self
            .db
            .run(move |conn| store::mark_offloaded(conn, advert_id, &uploaded, at))
            .await
            .map_err(|e| e.to_string())?;
        if marked {
            tracing::info!(%advert_id, store = %self.cloud.describe(), "advert offloaded");
        } else {
            tracing::info!(%advert_id, "the image was replaced while offloading; its own offload job follows");
        }
        Ok(())
    }

    async fn dead_lettered(&self, payload: &str, error: &str) {
        let Ok(OffloadPayload { advert_id }) = serde_json::from_str(payload) else {
            return;
        };
        tracing::error!(%advert_id, %error, "offload dead-lettered; the original stays in the database");
        if let Err(e) = self
            .db
            .run({
                let error = error.to_owned();
                move |conn| store::mark_offload_failed(conn, advert_id, &error)
            })
            .await
        {
            tracing::error!(%advert_id, error = %e, "could not mark the offload as failed");
        }
    }
}

/// Keeps the cloud clone in step with changes (pause, weight, schedule, caps, title and text,
/// deletion). A new image goes through the offload job again instead.
pub struct CloneSyncJob {
    db: Db,
    cloud: Arc<dyn CloudStore>,
}

impl CloneSyncJob {
    pub fn new(db: Db, cloud: Arc<dyn CloudStore>) -> Self {
        Self { db, cloud }
    }
}

#[async_trait]
impl JobHandler for CloneSyncJob {
    fn kind(&self) -> &'static str {
        CLONE_SYNC_JOB
    }

    async fn run(&self, payload: &str) -> Result<(), String> {
        let OffloadPayload { advert_id } =
            serde_json::from_str(payload).map_err(|e| format!("bad payload {payload:?}: {e}"))?;
        let advert = self
            .db
            .run(move |conn| store::find_advert(conn, advert_id, None))
            .await
            .map_err(|e| e.to_string())?;
        // Not offloaded yet: the offload job writes the latest state when it runs.
        let Some(advert) = advert.filter(|a| a.offload_status == OffloadStatus::Done) else {
            return Ok(());
        };
        let json = serde_json::to_vec_pretty(&advert).map_err(|e| e.to_string())?;
        self.cloud
            .put(&clone_key(advert_id), json)
            .await
            .map_err(|e| e.to_string())
    }

    async fn dead_lettered(&self, payload: &str, error: &str) {
        tracing::error!(%payload, %error, "the cloud clone could not be brought up to date");
        let Ok(OffloadPayload { advert_id }) = serde_json::from_str(payload) else {
            return;
        };
        let error = error.to_owned();
        if let Err(e) = self
            .db
            .run(move |conn| store::record_copy_failed(conn, advert_id, CopyJob::Sync, &error))
            .await
        {
            tracing::error!(%advert_id, error = %e, "could not record the failed cloud sync");
        }
    }
}
