-- Each hour's counts of an advert split by the viewer's device and by the viewer's country, as
-- far as they were known (the rest of advert_stats' totals is "unknown"). Shares of the same
-- totals, added by the same flush transaction.
CREATE TABLE advert_device_stats (
    advert_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    device TEXT NOT NULL,
    clicks BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    duplicate_clicks BIGINT NOT NULL DEFAULT 0,
    impressions BIGINT NOT NULL DEFAULT 0,
    suspicious_clicks BIGINT NOT NULL DEFAULT 0,
    suspicious_impressions BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (advert_id, bucket, device)
);

CREATE TABLE advert_country_stats (
    advert_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    country TEXT NOT NULL,
    clicks BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    duplicate_clicks BIGINT NOT NULL DEFAULT 0,
    impressions BIGINT NOT NULL DEFAULT 0,
    suspicious_clicks BIGINT NOT NULL DEFAULT 0,
    suspicious_impressions BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (advert_id, bucket, country)
);
