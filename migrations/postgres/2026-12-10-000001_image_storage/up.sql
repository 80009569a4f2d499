-- Image bytes are already compressed (JPEG, PNG, WebP, GIF): PostgreSQL's TOAST compression
-- (pglz) found nothing to take from them and cost more CPU than anything else on the database
-- side of intake (perf: pglz_compress, 41 % of the PostgreSQL backends' samples). EXTERNAL keeps
-- them out of line, uncompressed. Rows written before keep their stored form; reads are the same.
ALTER TABLE creatives ALTER COLUMN bytes SET STORAGE EXTERNAL;
ALTER TABLE advert_originals ALTER COLUMN bytes SET STORAGE EXTERNAL;
ALTER TABLE advert_images
    ALTER COLUMN bytes SET STORAGE EXTERNAL,
    ALTER COLUMN original SET STORAGE EXTERNAL;
ALTER TABLE advert_variants ALTER COLUMN bytes SET STORAGE EXTERNAL;
