-- Variants per image and creative: a cropped placement has one variant per image of the advert
-- (`creative` 0: the words are not drawn, the card carries them); a composed placement has one
-- per creative it was rendered for (the picture and that creative's words drawn together), a
-- bounded number of them.
CREATE TABLE advert_variants_new (
    advert_id BIGINT NOT NULL REFERENCES adverts (id) ON DELETE CASCADE,
    placement TEXT NOT NULL,
    image_index INTEGER NOT NULL DEFAULT 0,
    creative INTEGER NOT NULL DEFAULT 0,
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
    PRIMARY KEY (advert_id, placement, image_index, creative)
);
INSERT INTO advert_variants_new (advert_id, placement, fingerprint, status, reason, width, height,
    mime, hash, bytes, byte_len, title, body, crop_x, crop_y, crop_w, crop_h, updated_at)
SELECT advert_id, placement, fingerprint, status, reason, width, height, mime, hash, bytes,
    byte_len, title, body, crop_x, crop_y, crop_w, crop_h, updated_at FROM advert_variants;
DROP TABLE advert_variants;
ALTER TABLE advert_variants_new RENAME TO advert_variants;
-- A composed variant already stored was drawn with the advert's first title and text: the
-- creative of its first image with those words.
UPDATE advert_variants SET creative = COALESCE((
    SELECT MIN(c.number) FROM advert_creatives c JOIN adverts a ON a.id = c.advert_id
    WHERE c.advert_id = advert_variants.advert_id AND c.image_index = 0
      AND c.title = a.title AND c.body = a.body
), 1)
WHERE fingerprint LIKE '%:composed';

