-- Webhooks: a customer's HTTPS endpoints that receive its events, signed (Standard Webhooks).
-- `public_id` is the id the API shows (`wh_...`); `events` the subscribed event types separated
-- by spaces, or `*` for every type; `secret` the signing secret (`whsec_` + base64), kept because
-- every delivery is signed with it. `failing_since` is when deliveries started failing without a
-- success since; `disabled_at` is set when that lasted `webhooks.disable_after_hours` (or the
-- customer disabled it). Times are Unix milliseconds.
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    disabled_at BIGINT,
    disabled_reason TEXT,
    failing_since BIGINT
);
CREATE INDEX webhooks_customer_id ON webhooks (customer_id);

-- One event on its way to one webhook. `status` is `pending` while it is tried (the job queue
-- retries it with backoff), `succeeded` once the endpoint answered 2xx, `failed` when the
-- attempts ran out or the webhook was disabled.
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_response_code INTEGER,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);

-- When the webhook dispatcher handed the event to the webhooks subscribed to it (NULL: not yet).
-- Events recorded before webhooks existed have no webhook to reach.
ALTER TABLE events ADD COLUMN dispatched_at BIGINT;
UPDATE events SET dispatched_at = occurred_at;
CREATE INDEX events_undispatched ON events (seq) WHERE dispatched_at IS NULL;
