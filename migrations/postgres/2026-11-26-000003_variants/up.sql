-- One row per advert and placement: the generated creative, or why none could be made.
CREATE TABLE advert_variants (
    advert_id BIGINT NOT NULL REFERENCES adverts (id) ON DELETE CASCADE,
    placement TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mime TEXT,
    hash TEXT,
    bytes BYTEA,
    byte_len INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    crop_x INTEGER NOT NULL,
    crop_y INTEGER NOT NULL,
    crop_w INTEGER NOT NULL,
    crop_h INTEGER NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (advert_id, placement)
);
