-- Conversions: an advert may have its redirect carry a signed click id (`rk_click`), which the
-- advertiser reports back with `POST /api/v1/conversions`.
ALTER TABLE adverts ADD COLUMN conversion_tracking BOOLEAN NOT NULL DEFAULT 0;

-- One row per (click, event): a repeated report of the same conversion is the same row. What the
-- click id says (advert, placement, creative, device, country, click time) is copied out, so
-- reports group without decoding ids. `value_micros` is the value in millionths.
CREATE TABLE conversions (
    click_id TEXT NOT NULL,
    event TEXT NOT NULL,
    customer_id BIGINT NOT NULL,
    advert_id BIGINT NOT NULL,
    placement TEXT,
    creative INTEGER,
    device TEXT,
    country TEXT,
    clicked_at BIGINT NOT NULL,
    converted_at BIGINT NOT NULL,
    value_micros BIGINT,
    currency TEXT,
    PRIMARY KEY (click_id, event)
);
CREATE INDEX conversions_by_advert ON conversions (advert_id, clicked_at);

-- Keys reklama generated for itself and shares between its instances (the click id's signing
-- key), so ids stay verifiable across restarts and on every instance.
CREATE TABLE signing_keys (
    name TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
