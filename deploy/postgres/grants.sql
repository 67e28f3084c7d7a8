-- Who may read which offline feature tables in PostgreSQL: one login role per
-- person, SELECT granted table by table.
--
-- The story: Alice owns the driver tables her feature views
-- (driver_daily_stats, driver_locations) read from; Bob and Charlie start
-- with no access to them. When Alice shares the feature view
-- driver_daily_stats with Bob in Kubernetes (deploy/rbac/share-example.yaml),
-- she also grants Bob SELECT on its table, below. Kubernetes RBAC decides
-- what larder shows; these grants decide what each person's database user
-- can read, so a share needs both.
--
-- Run as a superuser or the database owner, in the offline store's database:
--   psql -v ON_ERROR_STOP=1 -d features -f deploy/postgres/grants.sql
-- It can be run again: existing roles, schema and tables are kept.
-- Replace every CHANGE_ME with a real password (or create the roles with
-- `\password` in psql), and keep them in Kubernetes Secrets.

-- Since PostgreSQL 15 ordinary users can no longer create objects in schema
-- public; make that so on older servers too. Tables live in feature_data.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'alice') THEN
        CREATE ROLE alice LOGIN PASSWORD 'CHANGE_ME';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bob') THEN
        CREATE ROLE bob LOGIN PASSWORD 'CHANGE_ME';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'charlie') THEN
        CREATE ROLE charlie LOGIN PASSWORD 'CHANGE_ME';
    END IF;
END
$$;

-- The schema belongs to whoever runs this file (the pipeline that loads
-- the tables), not to the people who read them.
CREATE SCHEMA IF NOT EXISTS feature_data;
REVOKE ALL ON SCHEMA feature_data FROM PUBLIC;
-- USAGE lets a role look tables up by name; it grants no rows. Table access
-- is the GRANT SELECT on each table.
GRANT USAGE ON SCHEMA feature_data TO alice, bob, charlie;

CREATE TABLE IF NOT EXISTS feature_data.driver_daily_stats (
    driver_id bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    created timestamptz,
    conv_rate real,
    acc_rate real,
    avg_daily_trips integer
);

CREATE TABLE IF NOT EXISTS feature_data.driver_locations (
    driver_id bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    lat double precision,
    lon double precision
);

REVOKE ALL ON feature_data.driver_daily_stats, feature_data.driver_locations FROM PUBLIC;

-- The owner of the feature views reads their tables.
GRANT SELECT ON feature_data.driver_daily_stats, feature_data.driver_locations TO alice;

-- Alice shares driver_daily_stats with Bob (only that table, as only that
-- feature view is shared):
--   GRANT SELECT ON feature_data.driver_daily_stats TO bob;
-- and stops sharing it:
--   REVOKE SELECT ON feature_data.driver_daily_stats FROM bob;
-- Charlie is granted nothing: his queries of either table fail with
-- "permission denied for table ...".
