-- The counter tables, stored in the order of their primary key (WITHOUT ROWID). A rowid table
-- keeps each row in a b-tree of rowids and its key in a second one, so every additive upsert of a
-- flush searched and wrote both; now it is one. Reports read an advert's hours as one range of the
-- same b-tree. The rows are small (a key and six counts), the case SQLite recommends this for.
-- advert_reach keeps its rowid: its sketches are kilobytes each.
CREATE TABLE advert_stats_rebuilt (
    advert_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    clicks BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    duplicate_clicks BIGINT NOT NULL DEFAULT 0,
    impressions BIGINT NOT NULL DEFAULT 0,
    suspicious_clicks BIGINT NOT NULL DEFAULT 0,
    suspicious_impressions BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (advert_id, bucket)
) WITHOUT ROWID;
INSERT INTO advert_stats_rebuilt (advert_id, bucket, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions)
    SELECT advert_id, bucket, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions FROM advert_stats;
DROP TABLE advert_stats;
ALTER TABLE advert_stats_rebuilt RENAME TO advert_stats;

CREATE TABLE advert_placement_stats_rebuilt (
    advert_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    placement TEXT NOT NULL,
    clicks BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    duplicate_clicks BIGINT NOT NULL DEFAULT 0,
    impressions BIGINT NOT NULL DEFAULT 0,
    suspicious_clicks BIGINT NOT NULL DEFAULT 0,
    suspicious_impressions BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (advert_id, bucket, placement)
) WITHOUT ROWID;
INSERT INTO advert_placement_stats_rebuilt (advert_id, bucket, placement, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions)
    SELECT advert_id, bucket, placement, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions FROM advert_placement_stats;
DROP TABLE advert_placement_stats;
ALTER TABLE advert_placement_stats_rebuilt RENAME TO advert_placement_stats;

CREATE TABLE advert_creative_stats_rebuilt (
    advert_id BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    creative INTEGER NOT NULL,
    clicks BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    duplicate_clicks BIGINT NOT NULL DEFAULT 0,
    impressions BIGINT NOT NULL DEFAULT 0,
    suspicious_clicks BIGINT NOT NULL DEFAULT 0,
    suspicious_impressions BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (advert_id, bucket, creative)
) WITHOUT ROWID;
INSERT INTO advert_creative_stats_rebuilt (advert_id, bucket, creative, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions)
    SELECT advert_id, bucket, creative, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions FROM advert_creative_stats;
DROP TABLE advert_creative_stats;
ALTER TABLE advert_creative_stats_rebuilt RENAME TO advert_creative_stats;

CREATE TABLE advert_device_stats_rebuilt (
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
) WITHOUT ROWID;
INSERT INTO advert_device_stats_rebuilt (advert_id, bucket, device, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions)
    SELECT advert_id, bucket, device, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions FROM advert_device_stats;
DROP TABLE advert_device_stats;
ALTER TABLE advert_device_stats_rebuilt RENAME TO advert_device_stats;

CREATE TABLE advert_country_stats_rebuilt (
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
) WITHOUT ROWID;
INSERT INTO advert_country_stats_rebuilt (advert_id, bucket, country, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions)
    SELECT advert_id, bucket, country, clicks, bot_clicks, duplicate_clicks, impressions, suspicious_clicks, suspicious_impressions FROM advert_country_stats;
DROP TABLE advert_country_stats;
ALTER TABLE advert_country_stats_rebuilt RENAME TO advert_country_stats;
