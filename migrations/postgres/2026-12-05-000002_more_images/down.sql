DROP TABLE advert_images;
