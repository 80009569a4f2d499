-- PostgreSQL's twin stops TOAST from compressing image bytes; SQLite never compresses values,
-- so there is nothing to change here. The migration exists so both backends list the same.
SELECT 1;
