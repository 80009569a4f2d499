//! The events reklama tells the outside world about: what happened to a customer's adverts and
//! their counts. Each has a stable name, used as the message's `type`, its routing key on the
//! broker and a webhook's subscription; names are added, never changed or removed.

use serde::Serialize;

/// One kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EventType {
    #[serde(rename = "advert.created")]
    AdvertCreated,
    #[serde(rename = "advert.updated")]
    AdvertUpdated,
    #[serde(rename = "advert.paused")]
    AdvertPaused,
    #[serde(rename = "advert.resumed")]
    AdvertResumed,
    #[serde(rename = "advert.deleted")]
    AdvertDeleted,
    #[serde(rename = "advert.offloaded")]
    AdvertOffloaded,
    #[serde(rename = "advert.variants_ready")]
    AdvertVariantsReady,
    #[serde(rename = "advert.cap_reached")]
    AdvertCapReached,
    #[serde(rename = "advert.ended")]
    AdvertEnded,
    #[serde(rename = "stats.flushed")]
    StatsFlushed,
    #[serde(rename = "click.recorded")]
    ClickRecorded,
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    #[serde(rename = "advert.offload_failed")]
    AdvertOffloadFailed,
}

impl EventType {
    pub const ALL: [Self; 13] = [
        Self::AdvertCreated,
        Self::AdvertUpdated,
        Self::AdvertPaused,
        Self::AdvertResumed,
        Self::AdvertDeleted,
        Self::AdvertOffloaded,
        Self::AdvertVariantsReady,
        Self::AdvertCapReached,
        Self::AdvertEnded,
        Self::StatsFlushed,
        Self::ClickRecorded,
        Self::WebhookDisabled,
        Self::AdvertOffloadFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdvertCreated => "advert.created",
            Self::AdvertUpdated => "advert.updated",
            Self::AdvertPaused => "advert.paused",
            Self::AdvertResumed => "advert.resumed",
            Self::AdvertDeleted => "advert.deleted",
            Self::AdvertOffloaded => "advert.offloaded",
            Self::AdvertVariantsReady => "advert.variants_ready",
            Self::AdvertCapReached => "advert.cap_reached",
            Self::AdvertEnded => "advert.ended",
            Self::StatsFlushed => "stats.flushed",
            Self::ClickRecorded => "click.recorded",
            Self::WebhookDisabled => "webhook.disabled",
            Self::AdvertOffloadFailed => "advert.offload_failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// What the event means, for people (the AsyncAPI document, the docs).
    pub fn summary(self) -> &'static str {
        match self {
            Self::AdvertCreated => "An advert was created (API or form).",
            Self::AdvertUpdated => {
                "An advert was changed; `data.changed` names the fields. A change of status alone \
                 is `advert.paused` or `advert.resumed` instead."
            }
            Self::AdvertPaused => "An advert was paused: it is no longer served.",
            Self::AdvertResumed => "A paused advert was made active again.",
            Self::AdvertDeleted => "An advert was deleted: its link answers 410 from now on.",
            Self::AdvertOffloaded => {
                "The advert's full record and original image are safely in the cloud store."
            }
            Self::AdvertVariantsReady => {
                "The advert's creatives for every placement were rendered and can be served."
            }
            Self::AdvertCapReached => {
                "A delivery cap was reached in the counts stored for billing: `max_impressions` \
                 or `max_clicks` once, `daily_max_impressions` once per day of the advert's time \
                 zone."
            }
            Self::AdvertEnded => "The advert's `ends_at` passed: it is no longer served.",
            Self::StatsFlushed => {
                "Counts reached the database: one event per advert and hour per flush, with the \
                 deltas that flush added and its id."
            }
            Self::ClickRecorded => {
                "One click on a tracked link, billable or not (only with `events.clicks = true`)."
            }
            Self::WebhookDisabled => {
                "One of the customer's webhooks was disabled: its deliveries had failed for \
                 `webhooks.disable_after_hours`. Nothing is sent to it until it is enabled again \
                 (`PATCH /api/v1/webhooks/{id}` with `\"enabled\": true`)."
            }
            Self::AdvertOffloadFailed => {
                "Copying the advert to the cloud store failed for good (`data.job`: the first \
                 copy, `offload`, or bringing it up to date, `sync`) after every attempt (`jobs.max_attempts`). The \
                 advert is still served, and its original stays in the database; a new image \
                 starts a new copy."
            }
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).ok(),
                Some(serde_json::Value::String(t.as_str().to_owned()))
            );
        }
        assert_eq!(EventType::parse("advert.exploded"), None);
    }
}
