-- Every instance asks for the adverts changed since its last look twice a second (the catalogue
-- poll, `serving.refresh_interval_ms`). Without an index on `updated_at` each poll read the whole
-- table: at 100 000 adverts, 200 000 rows a second per instance, for the few rows that changed.
CREATE INDEX adverts_updated_at_idx ON adverts (updated_at);
