-- ParkGate on PostgreSQL: the `events` table partitioned by day (README "PostgreSQL").
--
-- Run once, on a database at the newest migration (a collector has started on it, or
-- `alembic upgrade head`); running it again changes nothing:
--     psql "postgresql://USER@HOST/DB" -v ON_ERROR_STOP=1 -f deploy/postgres/partitioning.sql
-- Then once a day (cron, a systemd timer or pg_cron), to have the coming days' partitions ready:
--     SELECT parkgate_event_partitions(7);
-- and, if events are kept for a limited time, e.g. 400 days:
--     SELECT parkgate_drop_event_partitions(400);
--
-- Design. `events` becomes PARTITION BY RANGE (ts), one partition per UTC day (events_pYYYYMMDD)
-- plus events_default for anything outside them (a gate with a wrong clock, a missed daily run).
-- PostgreSQL allows a unique index on a partitioned table only if it contains the partition key,
-- so the primary key becomes (id, ts) instead of (id). The collector's de-duplication still
-- holds: it inserts with ON CONFLICT DO NOTHING without a conflict target, and a redelivered or
-- replayed event is the same payload, so the same (id, ts), so the same partition, where the
-- partition's own primary-key index finds it. What it no longer catches is one id arriving with
-- two different times, which only a broken or forged gate would send.
-- The alternative, a plain `event_ids (id PRIMARY KEY)` table beside a partitioned `events`,
-- keeps exact id uniqueness but adds a second insert per event and an index that grows forever
-- (dropping a day's partition would not shrink it), which is what partitioning is meant to avoid.
-- Queries by time (reports, the dashboard) read only the days they need; dropping a day is instant
-- and leaves no bloat. Gap detection reads by (gate, epoch, seq) without a time, so it looks into
-- every partition's small index: fine for a bounded number of days, a reason to drop old ones.
-- Alembic keeps working: the day partitions are skipped by autogenerate (cloud/migrations),
-- ALTER TABLE events ... reaches every partition, and autogenerate does not compare primary keys.

CREATE OR REPLACE FUNCTION parkgate_event_partitions(days_ahead integer DEFAULT 7,
                                                     from_day date DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
-- Creates the partitions of the UTC days from `from_day` (default today) to today + days_ahead
-- that do not exist yet; rows of such a day already in events_default move into it. Returns how
-- many partitions it created.
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    day date;
    lo timestamptz;
    hi timestamptz;
    part text;
    made integer := 0;
BEGIN
    FOR day IN SELECT d::date FROM generate_series(coalesce(from_day, today), today + days_ahead,
                                                   interval '1 day') AS d LOOP
        part := 'events_p' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        lo := day::timestamp AT TIME ZONE 'UTC';
        hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (SELECT 1 FROM events_default WHERE ts >= lo AND ts < hi) THEN
            EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
            EXECUTE format('WITH moved AS (DELETE FROM events_default WHERE ts >= %L AND ts < %L RETURNING *) '
                           'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
            EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        END IF;
        made := made + 1;
    END LOOP;
    RETURN made;
END $$;

CREATE OR REPLACE FUNCTION parkgate_drop_event_partitions(keep_days integer)
RETURNS integer LANGUAGE plpgsql AS $$
-- Drops the day partitions older than `keep_days` UTC days, with the snapshots of their events.
-- Returns how many it dropped.
DECLARE
    oldest date := (now() AT TIME ZONE 'UTC')::date - keep_days;
    part text;
    dropped integer := 0;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i
                JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_p[0-9]{8}$'
                  AND to_date(substr(c.relname, 9), 'YYYYMMDD') < oldest
                ORDER BY c.relname LOOP
        EXECUTE format('DELETE FROM snapshots WHERE event_id IN (SELECT id FROM %I)', part);
        EXECUTE format('ALTER TABLE events DETACH PARTITION %I', part);
        EXECUTE format('DROP TABLE %I', part);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

DO $$
DECLARE
    first_day date;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'events'::regclass) = 'p' THEN
        RAISE NOTICE 'events is already partitioned';
        RETURN;
    END IF;
    LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE events RENAME TO events_unpartitioned;
    ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey;
    ALTER INDEX events_gate_epoch_seq RENAME TO events_unpartitioned_gate_epoch_seq;
    ALTER INDEX events_lot_ts RENAME TO events_unpartitioned_lot_ts;
    ALTER INDEX ix_events_plate RENAME TO ix_events_unpartitioned_plate;
    ALTER INDEX ix_events_ts RENAME TO ix_events_unpartitioned_ts;

    CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                         CONSTRAINT events_pkey PRIMARY KEY (id, ts))
        PARTITION BY RANGE (ts);
    -- the same index names as the models (cloud/events_store.py), so autogenerate sees no change
    CREATE INDEX events_gate_epoch_seq ON events (gate_id, epoch, seq);
    CREATE INDEX events_lot_ts ON events (lot_id, ts);
    CREATE INDEX ix_events_plate ON events (plate);
    CREATE INDEX ix_events_ts ON events (ts);
    CREATE TABLE events_default PARTITION OF events DEFAULT;

    SELECT (min(ts) AT TIME ZONE 'UTC')::date INTO first_day FROM events_unpartitioned;
    PERFORM parkgate_event_partitions(7, first_day);
    INSERT INTO events SELECT * FROM events_unpartitioned;
    DROP TABLE events_unpartitioned;
END $$;
