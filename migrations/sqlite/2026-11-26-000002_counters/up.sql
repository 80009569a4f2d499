-- Counters per advert and hour, filled by additive upserts from the counter pipeline.
CREATE TABLE advert_stats (
    advert_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    clicks BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    duplicate_clicks BIGINT NOT NULL DEFAULT 0,
    impressions BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (advert_id, bucket)
);

-- Every batch of counter deltas applied, so that a batch replayed after a crash is not counted
-- twice.
CREATE TABLE counter_flushes (
    flush_id TEXT PRIMARY KEY,
    applied_at BIGINT NOT NULL
);
CREATE INDEX counter_flushes_applied_idx ON counter_flushes (applied_at);
