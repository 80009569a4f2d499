-- Dashboard sign-ins. A session cookie opens the dashboard only while its row is here, so signing
-- out (or revoking the key) ends it on every instance at once. `id_hash` is the SHA-256 of the
-- cookie value; `expires_at` is Unix milliseconds.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY NOT NULL,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_customer_id ON sessions (customer_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
