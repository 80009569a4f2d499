-- Variants per image and creative: a cropped placement has one variant per image of the advert
-- (`creative` 0: the words are not drawn, the card carries them); a composed placement has one
-- per creative it was rendered for (the picture and that creative's words drawn together), a
-- bounded number of them.
ALTER TABLE advert_variants ADD COLUMN image_index INTEGER NOT NULL DEFAULT 0;
ALTER TABLE advert_variants ADD COLUMN creative INTEGER NOT NULL DEFAULT 0;
ALTER TABLE advert_variants DROP CONSTRAINT advert_variants_pkey;
ALTER TABLE advert_variants ADD PRIMARY KEY (advert_id, placement, image_index, creative);
-- A composed variant already stored was drawn with the advert's first title and text: the
-- creative of its first image with those words.
UPDATE advert_variants SET creative = COALESCE((
    SELECT MIN(c.number) FROM advert_creatives c JOIN adverts a ON a.id = c.advert_id
    WHERE c.advert_id = advert_variants.advert_id AND c.image_index = 0
      AND c.title = a.title AND c.body = a.body
), 1)
WHERE fingerprint LIKE '%:composed';

