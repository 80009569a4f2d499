ALTER TABLE adverts DROP COLUMN targeting;
