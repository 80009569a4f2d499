-- Each customer gets back the hash of the key its key_id names (its first key); keys added since
-- are lost with the table.
UPDATE customers SET key_hash = COALESCE(
    (SELECT api_keys.key_hash FROM api_keys WHERE api_keys.key_id = customers.key_id),
    ''
);
DROP TABLE api_keys;
