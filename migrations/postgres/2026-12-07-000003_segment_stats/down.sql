DROP TABLE advert_country_stats;
DROP TABLE advert_device_stats;
