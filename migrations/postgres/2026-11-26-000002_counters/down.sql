DROP TABLE counter_flushes;
DROP TABLE advert_stats;
