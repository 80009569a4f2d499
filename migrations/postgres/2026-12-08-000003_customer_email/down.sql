ALTER TABLE customers DROP COLUMN report_email;
ALTER TABLE customers DROP COLUMN email;
