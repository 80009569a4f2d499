CREATE TABLE customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE adverts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    genre TEXT NOT NULL,
    lang TEXT,
    target_url TEXT NOT NULL,
    link_code TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    weight INTEGER NOT NULL DEFAULT 1,
    starts_at BIGINT,
    ends_at BIGINT,
    max_impressions BIGINT,
    max_clicks BIGINT,
    daily_max_impressions BIGINT,
    image_hash TEXT NOT NULL,
    image_width INTEGER NOT NULL,
    image_height INTEGER NOT NULL,
    source_format TEXT NOT NULL,
    source_width INTEGER NOT NULL,
    source_height INTEGER NOT NULL,
    offload_status TEXT NOT NULL,
    offloaded_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX adverts_customer_idx ON adverts (customer_id, id);

CREATE TABLE creatives (
    advert_id BIGINT PRIMARY KEY REFERENCES adverts (id) ON DELETE CASCADE,
    hash TEXT NOT NULL,
    mime TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes BLOB NOT NULL
);

CREATE TABLE advert_originals (
    advert_id BIGINT PRIMARY KEY REFERENCES adverts (id) ON DELETE CASCADE,
    mime TEXT NOT NULL,
    bytes BLOB NOT NULL
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at BIGINT NOT NULL,
    locked_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_ready_idx ON jobs (status, run_at);
