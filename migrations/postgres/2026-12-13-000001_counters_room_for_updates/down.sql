ALTER TABLE advert_stats RESET (fillfactor);
ALTER TABLE advert_placement_stats RESET (fillfactor);
ALTER TABLE advert_creative_stats RESET (fillfactor);
ALTER TABLE advert_device_stats RESET (fillfactor);
ALTER TABLE advert_country_stats RESET (fillfactor);
ALTER TABLE creative_arms RESET (fillfactor);
