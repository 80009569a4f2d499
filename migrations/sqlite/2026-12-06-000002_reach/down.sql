DROP TABLE advert_reach;
