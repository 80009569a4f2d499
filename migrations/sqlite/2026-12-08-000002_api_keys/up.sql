-- API keys with a scope, several per customer. A key is `rk_{key_id}_{secret}`: `key_id` is its
-- public id (shown in lists, carried by dashboard sessions), `key_hash` the SHA-256 of the whole
-- key (the secret itself is never stored). `scope` is `read` (GETs only) or `write` (everything).
-- Times are Unix milliseconds; `last_used_at` is written at most once a minute per key.
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    key_id TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    name TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_customer_id ON api_keys (customer_id);

-- Every customer's key so far becomes a write key (what it could do until now), revoked if the
-- customer was.
INSERT INTO api_keys (customer_id, key_id, key_hash, scope, name, created_at, revoked_at)
SELECT id, key_id, key_hash, 'write', NULL, created_at, revoked_at FROM customers;

-- customers.key_id and customers.key_hash are no longer read: the hash moved above and is blanked
-- here so no second copy of a credential lingers. The columns stay (dropping a UNIQUE column
-- means rebuilding the table on SQLite); a new customer's key_id repeats its first key's public id.
UPDATE customers SET key_hash = '';
