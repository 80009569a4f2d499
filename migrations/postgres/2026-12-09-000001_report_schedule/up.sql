-- The end (Unix seconds) of the last period whose report e-mail was queued for the customer
-- (NULL: none yet). The report job queues a period's e-mail in the transaction that moves it
-- forward, so each period is reported once, however many instances run the job.
ALTER TABLE customers ADD COLUMN report_sent_until BIGINT;
