//! The traits the modules declare, implemented over the other modules: the only places where
//! one module's service reaches another's.

use std::sync::Arc;

use crate::domain::AdvertId;
use crate::domain::creative::CreativeId;
use crate::modules::{intake, integrations, serving, tracking};
use crate::platform::db::DbError;

/// Passes advert changes made on this instance to the caches of the other modules at once
/// (other instances notice them through serving's change polling).
pub(super) struct AdvertFanout {
    pub tracking: Arc<tracking::TrackingService>,
    pub serving: Arc<serving::ServingService>,
    pub media: serving::MediaService,
}

#[async_trait::async_trait]
impl intake::AdvertObserver for AdvertFanout {
    async fn advert_changed(&self, advert: AdvertId, link_code: &str) {
        self.tracking.forget_link(link_code).await;
        self.serving.full_records().forget(advert).await;
        // A replaced image's old URLs answer 404 here at once, not only once memory evicts it.
        self.media.forget(advert);
        if let Err(e) = self.serving.inventory().refresh(advert).await {
            tracing::warn!(%advert, error = %e, "serving will see this change at its next poll");
        }
    }
}

/// Lets the variants job rank an advert's creatives by tracking's counts.
pub(super) struct TalliesBridge {
    pub tracking: Arc<tracking::TrackingService>,
}

/// How far back the counts that rank creatives reach (as far as the learner's shared counts).
const TALLY_DAYS: i64 = 30;

#[async_trait::async_trait]
impl intake::CreativeTallies for TalliesBridge {
    async fn tallies(
        &self,
        advert: AdvertId,
    ) -> Result<std::collections::HashMap<CreativeId, crate::domain::creative::Tally>, String> {
        self.tracking
            .creative_tallies(advert, TALLY_DAYS)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Lets tracking attribute clicks with serving's impression tokens, and tell serving of billable
/// clicks (click caps, users' interests).
pub(super) struct ClickBridge {
    pub users: Arc<serving::Users>,
    pub inventory: Arc<serving::Inventory>,
    /// `serving.country_header`: the viewer of a click is read as serving reads it.
    pub country_header: Option<actix_web::http::header::HeaderName>,
}

impl tracking::ClickHooks for ClickBridge {
    fn attribute(&self, token: &str, advert: AdvertId) -> Option<tracking::Attribution> {
        self.users
            .visitor(token, advert)
            .map(|claims| tracking::Attribution {
                visitor: claims.user.0,
                placement: claims.placement,
                expired: claims.expired,
                creative: claims.creative,
            })
    }

    fn clicked(&self, advert: AdvertId, attribution: Option<&tracking::Attribution>) {
        let claims = attribution.map(|a| serving::TokenClaims {
            user: serving::UserKey(a.visitor),
            placement: a.placement,
            expired: a.expired,
            creative: a.creative,
        });
        serving::clicked(&self.inventory, &self.users, advert, claims.as_ref());
    }

    fn viewer(&self, req: &actix_web::HttpRequest) -> crate::domain::targeting::Viewer {
        crate::platform::viewers::from_headers(req, self.country_header.as_ref())
    }
}

/// Lets serving settle tracking's ledger before it reads delivered totals for its caps. Tracking
/// is built after serving's users and inventory (its click hooks need them), so the bridge is
/// attached once both exist, before the catalogue is warmed.
#[derive(Default)]
pub(super) struct LedgerBridge {
    tracking: std::sync::OnceLock<Arc<tracking::TrackingService>>,
}

impl LedgerBridge {
    pub fn attach(&self, tracking: Arc<tracking::TrackingService>) {
        let _ = self.tracking.set(tracking);
    }
}

#[async_trait::async_trait]
impl serving::Ledger for LedgerBridge {
    async fn settle(&self) -> Result<(), DbError> {
        let tracking = self.tracking.get().ok_or_else(|| {
            DbError::Unavailable("the counter pipeline is not running yet".into())
        })?;
        tracking
            .flush()
            .await
            .map_err(|e| DbError::Unavailable(format!("settling counts: {e}")))
    }
}

/// Lets serving count impressions in tracking's counters.
pub(super) struct ImpressionBridge {
    pub tracking: Arc<tracking::TrackingService>,
}

impl serving::ImpressionSink for ImpressionBridge {
    fn impression(
        &self,
        advert: AdvertId,
        placement: Option<usize>,
        creative: CreativeId,
        reached: u64,
        viewer: crate::domain::targeting::Viewer,
        billable: bool,
    ) {
        let metric = if billable {
            self.tracking.served(advert, reached);
            tracking::Metric::Impression
        } else {
            tracking::Metric::SuspiciousImpression
        };
        self.tracking
            .record(advert, metric, placement, Some(creative), viewer);
    }
}

/// Gives the report e-mail tracking's counts of a customer's adverts.
pub(super) struct ReportBridge {
    pub tracking: Arc<tracking::TrackingService>,
}

#[async_trait::async_trait]
impl integrations::ReportSource for ReportBridge {
    async fn adverts(
        &self,
        customer: crate::domain::CustomerId,
        from: i64,
        to: i64,
    ) -> Result<Vec<integrations::AdvertPeriod>, String> {
        let adverts = self
            .tracking
            .customer_hours(customer, from, to)
            .await
            .map_err(|e| e.to_string())?;
        Ok(adverts
            .into_iter()
            .map(|a| integrations::AdvertPeriod {
                advert: a.advert_id,
                title: a.title,
                hours: a
                    .hours
                    .into_iter()
                    .map(|(hour, counts)| (hour, counts.impressions, counts.clicks))
                    .collect(),
                conversions: a.conversions,
            })
            .collect())
    }
}
