-- How the impression caps are spent: 'asap' (while under them) or 'even' (spread over the
-- advert's active time).
ALTER TABLE adverts ADD COLUMN pacing TEXT NOT NULL DEFAULT 'asap';
