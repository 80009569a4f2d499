ALTER TABLE advert_placement_stats DROP COLUMN suspicious_impressions;
ALTER TABLE advert_placement_stats DROP COLUMN suspicious_clicks;
ALTER TABLE advert_stats DROP COLUMN suspicious_impressions;
ALTER TABLE advert_stats DROP COLUMN suspicious_clicks;
