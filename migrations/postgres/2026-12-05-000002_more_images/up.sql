-- A responsive advert's images after the first (which stays in adverts, creatives and
-- advert_originals): the compressed creative, what it was made from, and the original upload
-- its placements are rendered from.
CREATE TABLE advert_images (
    advert_id BIGINT NOT NULL REFERENCES adverts (id) ON DELETE CASCADE,
    image_index INTEGER NOT NULL,
    hash TEXT NOT NULL,
    mime TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes BYTEA NOT NULL,
    source_format TEXT NOT NULL,
    source_width INTEGER NOT NULL,
    source_height INTEGER NOT NULL,
    original BYTEA NOT NULL,
    PRIMARY KEY (advert_id, image_index)
);
