-- One variant per placement again: the first image's, and the first creative's where composed.
DELETE FROM advert_variants v WHERE v.image_index <> 0 OR EXISTS (
    SELECT 1 FROM advert_variants o
    WHERE o.advert_id = v.advert_id AND o.placement = v.placement AND o.image_index = 0
      AND o.creative < v.creative);
ALTER TABLE advert_variants DROP CONSTRAINT advert_variants_pkey;
ALTER TABLE advert_variants DROP COLUMN creative;
ALTER TABLE advert_variants DROP COLUMN image_index;
ALTER TABLE advert_variants ADD PRIMARY KEY (advert_id, placement);
