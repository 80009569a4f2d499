CREATE TABLE advert_variants_old (
    advert_id BIGINT NOT NULL REFERENCES adverts (id) ON DELETE CASCADE,
    placement TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mime TEXT,
    hash TEXT,
    bytes BLOB,
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
-- One variant per placement again: the first image's, and the first creative's where composed.
INSERT OR IGNORE INTO advert_variants_old (advert_id, placement, fingerprint, status, reason,
    width, height, mime, hash, bytes, byte_len, title, body, crop_x, crop_y, crop_w, crop_h,
    updated_at)
SELECT advert_id, placement, fingerprint, status, reason, width, height, mime, hash, bytes,
    byte_len, title, body, crop_x, crop_y, crop_w, crop_h, updated_at FROM advert_variants
WHERE image_index = 0 ORDER BY advert_id, placement, creative;
DROP TABLE advert_variants;
ALTER TABLE advert_variants_old RENAME TO advert_variants;
