DROP TABLE advert_placement_stats;
