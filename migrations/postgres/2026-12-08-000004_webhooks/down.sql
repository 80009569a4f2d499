DROP INDEX events_undispatched;
ALTER TABLE events DROP COLUMN dispatched_at;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
