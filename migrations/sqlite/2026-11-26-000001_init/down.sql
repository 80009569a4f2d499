DROP TABLE jobs;
DROP TABLE advert_originals;
DROP TABLE creatives;
DROP TABLE adverts;
DROP TABLE customers;
