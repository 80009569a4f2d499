-- Room in every new page of the counter tables for the next versions of its rows. Each flush adds
-- to the rows of the current hour, and PostgreSQL writes an updated row as a new version: when
-- the row's page has room for it and no indexed column changed (only counts do), the new version
-- stays in the page and the primary key is not touched (a heap-only update); in full pages every
-- update also inserted a key into the index and spread the table over more pages until vacuum
-- came. Filled to 70 %, pages keep that room; the rows of past hours, never updated again, take
-- about 1.4 times the space. Pages written before this keep their fill.
ALTER TABLE advert_stats SET (fillfactor = 70);
ALTER TABLE advert_placement_stats SET (fillfactor = 70);
ALTER TABLE advert_creative_stats SET (fillfactor = 70);
ALTER TABLE advert_device_stats SET (fillfactor = 70);
ALTER TABLE advert_country_stats SET (fillfactor = 70);
ALTER TABLE creative_arms SET (fillfactor = 70);
