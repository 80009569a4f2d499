-- Responsive adverts: the titles and texts after the first (which stay in `title` and `body`),
-- as JSON arrays of strings.
ALTER TABLE adverts ADD COLUMN more_titles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE adverts ADD COLUMN more_texts TEXT NOT NULL DEFAULT '[]';

-- Each combination of an advert's image, title and text, numbered within the advert. A
-- combination keeps its number (and status) while its image, title and text stay on the
-- advert; one that leaves the advert is `retired`, never renumbered, so counts recorded for a
-- number always mean the same words.
CREATE TABLE advert_creatives (
    advert_id BIGINT NOT NULL REFERENCES adverts (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    image_index INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (advert_id, number)
);

-- Every live advert starts with its one combination as creative 1.
INSERT INTO advert_creatives (advert_id, number, image_index, title, body, status, created_at)
SELECT id, 1, 0, title, body, 'active', created_at FROM adverts;

-- Each known creative's share of an advert's hourly counts (beside `advert_placement_stats`).
CREATE TABLE advert_creative_stats (
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
);
