-- The request that enqueued a job (X-Request-Id), so the job's logs can be tied to it.
ALTER TABLE jobs ADD COLUMN request_id TEXT;
