-- Each named placement's share of advert_stats, per advert and hour, written in the same
-- transaction as the totals. The generic card's share is what the named placements leave of
-- the total, so counts from before placements were recorded read as the generic card's.
CREATE TABLE advert_placement_stats (
    advert_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    placement TEXT NOT NULL,
    clicks BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    duplicate_clicks BIGINT NOT NULL DEFAULT 0,
    impressions BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (advert_id, bucket, placement)
);
