-- Who an advert is for (devices, countries, weekdays, hours, time zone) as canonical JSON;
-- NULL: everyone, at any time, days in UTC.
ALTER TABLE adverts ADD COLUMN targeting TEXT;
