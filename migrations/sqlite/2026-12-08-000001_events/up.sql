-- The event outbox: what happened to a customer's adverts, written in the same transaction as the
-- change itself, then published to the message broker (events.amqp_url) at least once. `seq`
-- orders rows as they were committed; `id` is the event's public id, unique, so an event that
-- must happen once (a cap reached in a period) is recorded once however many instances see it.
-- `publishing_until` is a relay's lease on a row it is publishing; `published_at` is set
-- when the broker confirmed it.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    advert_id BIGINT,
    data TEXT NOT NULL,
    published_at BIGINT,
    publishing_until BIGINT
);
CREATE INDEX events_unpublished ON events (seq) WHERE published_at IS NULL;
CREATE INDEX events_by_time ON events (occurred_at);
