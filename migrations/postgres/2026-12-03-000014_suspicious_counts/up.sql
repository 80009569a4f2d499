-- Invalid traffic, counted apart and never billed: clicks past a per-address or per-user
-- threshold or with an expired impression token, and impressions served past the per-address
-- serve rate.
ALTER TABLE advert_stats ADD COLUMN suspicious_clicks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE advert_stats ADD COLUMN suspicious_impressions BIGINT NOT NULL DEFAULT 0;
ALTER TABLE advert_placement_stats ADD COLUMN suspicious_clicks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE advert_placement_stats ADD COLUMN suspicious_impressions BIGINT NOT NULL DEFAULT 0;
