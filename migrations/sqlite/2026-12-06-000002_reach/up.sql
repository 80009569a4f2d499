-- Unique reach: the users served an advert on one UTC day, as a HyperLogLog sketch
-- (platform::hll's encoding). Instances fold what they served into it (register-wise maximum), so
-- a merge may be repeated and merges may come in any order. NULL: a row being created.
CREATE TABLE advert_reach (
    advert_id BIGINT NOT NULL,
    day BIGINT NOT NULL,
    sketch BLOB,
    PRIMARY KEY (advert_id, day)
);
