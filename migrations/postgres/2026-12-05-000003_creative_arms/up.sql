-- The learner's counts per advert, placement (`-`: the generic card) and creative, when there is
-- no Redis to share them: added to every few seconds, read back for the adverts served, so a
-- restart (or another instance on the same database) learns on from them.
CREATE TABLE creative_arms (
    advert_id BIGINT NOT NULL,
    placement TEXT NOT NULL,
    creative INTEGER NOT NULL,
    impressions BIGINT NOT NULL DEFAULT 0,
    clicks BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (advert_id, placement, creative)
);
