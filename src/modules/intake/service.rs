//! The intake service: turns a submission into a stored advert with its creative and a queued
//! offload job.

use std::sync::Arc;

use crate::domain::{Advert, AdvertId, CustomerId};
use crate::platform::auth::{Customer, Customers};
use crate::platform::cpu::CpuPool;
use crate::platform::db::Db;
use crate::platform::jobs::{Enqueuer, JobWaker};
use crate::platform::urls::PublicUrls;

use super::creative::{Creative, CreativeSpec, make_creative};
use super::error::IntakeError;
use super::input::{PatchRequest, RawAdvert, Upload};
use super::outbox::AdvertEvents;
use super::store::{self, NewImage};
use super::{AdvertObserver, IntakeSettings};

/// Most adverts one list call returns.
pub const MAX_PAGE: i64 = 100;

#[derive(Clone)]
pub struct IntakeService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    customers: Customers,
    spec: CreativeSpec,
    offload_attempts: u32,
    waker: JobWaker,
    max_image_bytes: usize,
    observer: Arc<dyn AdvertObserver>,
    cpu: CpuPool,
    events: AdvertEvents,
}

impl IntakeService {
    pub fn new(
        db: Db,
        customers: Customers,
        settings: &IntakeSettings,
        jobs: Enqueuer,
        observer: Arc<dyn AdvertObserver>,
        cpu: CpuPool,
        urls: PublicUrls,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                customers,
                spec: settings.creative_spec(),
                offload_attempts: jobs.max_attempts,
                waker: jobs.waker,
                max_image_bytes: settings.max_image_bytes,
                observer,
                cpu,
                events: AdvertEvents::new(urls),
            }),
        }
    }

    /// Each upload's creative, made on the image pool, and the original bytes it came from. A
    /// problem is reported under the upload's field; every image's problem together.
    async fn compress(
        &self,
        uploads: Vec<Upload>,
    ) -> Result<Vec<(Creative, Vec<u8>)>, IntakeError> {
        let spec = self.inner.spec.clone();
        let made = self
            .inner
            .cpu
            .run(move || {
                uploads
                    .into_iter()
                    .map(|upload| {
                        make_creative(&upload.bytes, &spec)
                            .map(|c| (c, upload.bytes))
                            .map_err(|e| IntakeError::image(e, &upload.field))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| IntakeError::Worker(e.to_string()))?;
        let mut images = Vec::with_capacity(made.len());
        let mut fields = Vec::new();
        for result in made {
            match result {
                Ok(image) => images.push(image),
                Err(IntakeError::Invalid(problems)) => fields.extend(problems),
                // Too large, or not an image at all: answered with its own status.
                Err(other) => return Err(other),
            }
        }
        if fields.is_empty() {
            Ok(images)
        } else {
            Err(IntakeError::Invalid(fields))
        }
    }

    pub fn max_image_bytes(&self) -> usize {
        self.inner.max_image_bytes
    }

    pub fn customers(&self) -> &Customers {
        &self.inner.customers
    }

    /// Validates, compresses the image off the async workers, and stores everything in one
    /// transaction.
    pub async fn create(&self, customer: &Customer, raw: RawAdvert) -> Result<Advert, IntakeError> {
        let (new_advert, uploads) = match raw.validate() {
            Ok(valid) => valid,
            Err(mut fields) => {
                // Check the images too, cheaply (format only), so that one answer lists
                // everything.
                for upload in raw.uploads() {
                    if let Err(e) = super::creative::sniff(&upload.bytes) {
                        fields.extend(IntakeError::image(e, &upload.field).field_errors());
                    }
                }
                return Err(IntakeError::Invalid(fields));
            }
        };
        let images = self.compress(uploads).await?;
        let owner = customer.id;
        let attempts = self.inner.offload_attempts;
        let events = self.inner.events.clone();
        let advert = self
            .inner
            .db
            .run(move |conn| {
                let images: Vec<NewImage<'_>> = images.iter().map(NewImage::from).collect();
                store::insert_advert(conn, owner, &new_advert, &images, attempts, &events)
            })
            .await?;
        self.inner.waker.wake();
        self.inner
            .observer
            .advert_changed(advert.id, &advert.link_code)
            .await;
        tracing::info!(advert_id = %advert.id, customer_id = %owner, "advert created");
        Ok(advert)
    }

    pub async fn get(&self, owner: CustomerId, id: AdvertId) -> Result<Advert, IntakeError> {
        self.inner
            .db
            .run(move |conn| store::find_advert(conn, id, Some(owner)))
            .await?
            .ok_or(IntakeError::NotFound)
    }

    pub async fn list(
        &self,
        owner: CustomerId,
        before: Option<AdvertId>,
        limit: i64,
    ) -> Result<Vec<Advert>, IntakeError> {
        let limit = limit.clamp(1, MAX_PAGE);
        Ok(self
            .inner
            .db
            .run(move |conn| store::list_adverts(conn, owner, before, limit))
            .await?)
    }

    /// Applies a customer's change to their advert (an empty one changes nothing, not even
    /// `updated_at`), then tells the observer. A new image is processed by the same pipeline as
    /// on creation, off the async workers, before anything is written.
    pub async fn update(
        &self,
        owner: CustomerId,
        id: AdvertId,
        request: PatchRequest,
    ) -> Result<Advert, IntakeError> {
        if request.is_empty() {
            return self.get(owner, id).await;
        }
        let PatchRequest { patch, images } = request;
        let images = match images {
            Some(uploads) => {
                // Not someone else's advert: answer 404 before spending time on the images.
                self.get(owner, id).await?;
                Some(self.compress(uploads).await?)
            }
            None => None,
        };
        let attempts = self.inner.offload_attempts;
        let events = self.inner.events.clone();
        let advert = self
            .inner
            .db
            .run(move |conn| {
                let new_images: Option<Vec<NewImage<'_>>> = images
                    .as_ref()
                    .map(|all| all.iter().map(NewImage::from).collect());
                store::update_advert(
                    conn,
                    id,
                    owner,
                    &patch,
                    new_images.as_deref(),
                    attempts,
                    &events,
                )
            })
            .await?;
        self.inner.waker.wake();
        self.inner
            .observer
            .advert_changed(advert.id, &advert.link_code)
            .await;
        tracing::info!(
            advert_id = %id,
            customer_id = %owner,
            status = advert.status.as_str(),
            "advert updated"
        );
        Ok(advert)
    }

    /// Soft-deletes a customer's advert, then tells the observer.
    pub async fn delete(&self, owner: CustomerId, id: AdvertId) -> Result<(), IntakeError> {
        let attempts = self.inner.offload_attempts;
        let events = self.inner.events.clone();
        let link_code = self
            .inner
            .db
            .run(move |conn| store::delete_advert(conn, id, owner, attempts, &events))
            .await?
            .ok_or(IntakeError::NotFound)?;
        self.inner.waker.wake();
        self.inner.observer.advert_changed(id, &link_code).await;
        tracing::info!(advert_id = %id, customer_id = %owner, "advert deleted");
        Ok(())
    }

    /// The creatives of a customer's advert.
    pub async fn creatives(
        &self,
        owner: CustomerId,
        id: AdvertId,
    ) -> Result<Vec<super::creatives::CreativeView>, IntakeError> {
        let rows = self
            .inner
            .db
            .run(move |conn| super::creatives::list(conn, id, owner))
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Pauses, pins or resumes one creative of a customer's advert, then tells the observer
    /// (serving reloads the advert's cards).
    pub async fn set_creative_status(
        &self,
        owner: CustomerId,
        id: AdvertId,
        creative: crate::domain::creative::CreativeId,
        status: crate::domain::creative::CreativeStatus,
    ) -> Result<super::creatives::CreativeView, IntakeError> {
        let now = crate::platform::db::now_ms();
        let attempts = self.inner.offload_attempts;
        let (row, link_code) = self
            .inner
            .db
            .run(move |conn| {
                super::creatives::set_status(conn, id, owner, (creative, status), now, attempts)
            })
            .await?;
        self.inner.waker.wake();
        self.inner.observer.advert_changed(id, &link_code).await;
        tracing::info!(
            advert_id = %id,
            customer_id = %owner,
            creative_id = %creative,
            status = status.as_str(),
            "creative updated"
        );
        Ok(row.into())
    }

    /// The stored variants of a customer's advert.
    pub async fn variants(
        &self,
        owner: CustomerId,
        id: AdvertId,
    ) -> Result<Vec<super::variants::store::VariantRow>, IntakeError> {
        self.get(owner, id).await?;
        Ok(self
            .inner
            .db
            .run(move |conn| super::variants::store::list(conn, id))
            .await?)
    }
}
