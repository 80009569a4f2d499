ALTER TABLE adverts DROP COLUMN pacing;
