DROP TABLE signing_keys;
DROP TABLE conversions;
ALTER TABLE adverts DROP COLUMN conversion_tracking;
