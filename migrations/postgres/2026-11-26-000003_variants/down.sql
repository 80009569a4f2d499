DROP TABLE advert_variants;
