DROP TABLE advert_creative_stats;
DROP TABLE advert_creatives;
ALTER TABLE adverts DROP COLUMN more_texts;
ALTER TABLE adverts DROP COLUMN more_titles;
