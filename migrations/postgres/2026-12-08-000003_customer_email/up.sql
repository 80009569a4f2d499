-- A customer's e-mail address (NULL: none), where alerts and reports go, and which report
-- e-mail the customer wants: `off` (the default), `daily` or `weekly`. Set with
-- `reklama customer add|set NAME --email ADDRESS --report ...` or on the dashboard's account page.
ALTER TABLE customers ADD COLUMN email TEXT;
ALTER TABLE customers ADD COLUMN report_email TEXT NOT NULL DEFAULT 'off'
    CHECK (report_email IN ('off', 'daily', 'weekly'));
