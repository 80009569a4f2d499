DROP INDEX adverts_updated_at_idx;
