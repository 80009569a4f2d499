ALTER TABLE customers DROP COLUMN report_sent_until;
