-- The advert's call to action (the button of composed creatives); NULL: the default for its
-- language.
ALTER TABLE adverts ADD COLUMN cta TEXT;
