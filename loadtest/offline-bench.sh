#!/usr/bin/env bash
# The offline store, timed: `larder historical` (a point-in-time training set
# of 1,000,000 entity rows against 3 feature views in PostgreSQL, to Parquet
# and to CSV) and `larder materialize-incremental` (1,000,000 entity keys x
# 10 features from PostgreSQL into Redis). Wall time, rows/s and larder's
# peak RSS (from /usr/bin/time -v) for each.
#
#   loadtest/offline-bench.sh                       # the full sizes, ~10 minutes
#   DRIVERS=10000 ROWS_PER_DRIVER=30 ENTITY_ROWS=100000 MAT_ENTITIES=100000 \
#       loadtest/offline-bench.sh                   # a quicker look
#   EXPLAIN=1 loadtest/offline-bench.sh             # also EXPLAIN ANALYZE the
#                                                   # point-in-time query
#
# Needs: a PostgreSQL server that takes the user postgres without a password
# (PGHOST, PGPORT, PGUSER; default 127.0.0.1:5432, postgres), psql,
# redis-server, redis-cli and GNU time (/usr/bin/time). The script creates
# its own database (larder_bench_<pid>) and its own Redis on a free port in a
# temporary folder, and drops and stops both at exit. KEEP=1 keeps the
# folder (the config, definitions, outputs and each command's output).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

DRIVERS=${DRIVERS:-100000}              # distinct drivers in the historical sources
ROWS_PER_DRIVER=${ROWS_PER_DRIVER:-30}  # rows per driver in each of the 3 sources
DAYS=${DAYS:-30}                        # the sources span this many days
ENTITY_ROWS=${ENTITY_ROWS:-1000000}     # entity rows of the training set
MAT_ENTITIES=${MAT_ENTITIES:-1000000}   # entity keys to materialize
MAT_VERSIONS=${MAT_VERSIONS:-1}         # source rows per key (the latest wins)
BATCH_ROWS=${BATCH_ROWS:-10000}         # offline_store.batch_rows
CMD_TIMEOUT=${CMD_TIMEOUT:-1800}        # seconds, per timed command
EXPLAIN=${EXPLAIN:-0}
KEEP=${KEEP:-0}
T0='2024-05-01 00:00:00+00'             # where the source data starts

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
DB=larder_bench_$$
NS=bench
LARDER=$ROOT/target/release/larder
TIME=/usr/bin/time

for tool in psql redis-server redis-cli python3 "$TIME"; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/larder-offline-bench.XXXXXX")
REDIS_PID=
DB_CREATED=0
cleanup() {
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
    if [ "$DB_CREATED" = 1 ]; then
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# psql on the bench database, stopping at the first error.
sql() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
step() { printf '== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }

step "build"
cargo build --release --locked -p larder
"$LARDER" materialize-incremental --help >/dev/null

step "postgres database $DB on $PGHOST:$PGPORT"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DB"
DB_CREATED=1
sql -Atc "SHOW server_version"

REDIS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "redis on 127.0.0.1:$REDIS_PORT (nothing kept on disk)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null

# ---------------------------------------------------------------- data
SOURCE_ROWS=$((DRIVERS * ROWS_PER_DRIVER))
step "historical sources: 3 tables x $SOURCE_ROWS rows ($DRIVERS drivers x $ROWS_PER_DRIVER), over $DAYS days"
sql <<EOF
SELECT setseed(0.42) AS seed \gset
-- Daily stats: evenly spaced over the days, 5 features.
CREATE TABLE driver_daily_stats AS
SELECT d AS driver_id,
       timestamptz '$T0' + (i * interval '$DAYS days') / $ROWS_PER_DRIVER AS event_timestamp,
       (random())::real AS conv_rate,
       (random())::real AS acc_rate,
       (random() * 40)::bigint AS avg_daily_trips,
       random() * 500 AS profit,
       'city_' || (d % 500) AS city
FROM generate_series(1, $DRIVERS) AS d, generate_series(0, $ROWS_PER_DRIVER - 1) AS i;
-- Hourly stats: one per slot, at a random minute within it, 3 features.
CREATE TABLE driver_hourly (
    driver_id bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    trips integer,
    earnings double precision,
    online boolean
);
INSERT INTO driver_hourly
SELECT d,
       timestamptz '$T0' + ((i + random()) * interval '$DAYS days') / $ROWS_PER_DRIVER,
       (random() * 4)::integer,
       random() * 60,
       random() < 0.8
FROM generate_series(1, $DRIVERS) AS d, generate_series(0, $ROWS_PER_DRIVER - 1) AS i;
-- Locations: at random times, 2 features (the view has a 1-day TTL).
CREATE TABLE driver_locations AS
SELECT d AS driver_id,
       timestamptz '$T0' + random() * interval '$DAYS days' AS event_timestamp,
       52.0 + random() AS lat,
       13.0 + random() AS lon
FROM generate_series(1, $DRIVERS) AS d, generate_series(1, $ROWS_PER_DRIVER) AS i;
CREATE INDEX ON driver_daily_stats (driver_id, event_timestamp);
CREATE INDEX ON driver_hourly (driver_id, event_timestamp);
CREATE INDEX ON driver_locations (driver_id, event_timestamp);
EOF
sql -c "VACUUM ANALYZE driver_daily_stats, driver_hourly, driver_locations"

step "entity rows: $ENTITY_ROWS random drivers at random times (day 2 to day $DAYS)"
sql <<EOF
SELECT setseed(0.17) AS seed \gset
\\copy (SELECT 1 + floor(random() * $DRIVERS)::bigint AS driver_id, to_char((timestamptz '$T0' + interval '1 day' + random() * interval '$((DAYS - 1)) days') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS event_timestamp, 'trip_' || g AS trip_id FROM generate_series(1, $ENTITY_ROWS) AS g) TO '$WORK/entities.csv' WITH (FORMAT csv, HEADER)
EOF
head -3 "$WORK/entities.csv"

MAT_ROWS=$((MAT_ENTITIES * MAT_VERSIONS))
step "materialization source: $MAT_ROWS rows ($MAT_ENTITIES drivers x $MAT_VERSIONS) x 10 features"
sql <<EOF
SELECT setseed(0.7) AS seed \gset
CREATE TABLE driver_profile AS
SELECT d AS driver_id,
       timestamptz '$T0' + v * interval '1 day' + random() * interval '1 hour' AS event_timestamp,
       random() * 500 AS f0_profit,
       (random())::real AS f1_rate,
       (random() * 10000)::bigint AS f2_trips,
       (random() * 100)::integer AS f3_rating,
       'city_' || (d % 500) AS f4_city,
       random() < 0.5 AS f5_active,
       random() AS f6_score,
       (random() * 1e9)::bigint AS f7_lifetime_ms,
       md5(d::text || v) AS f8_vehicle,
       random() * 24 AS f9_hours
FROM generate_series(1, $MAT_ENTITIES) AS d, generate_series(1, $MAT_VERSIONS) AS v;
CREATE INDEX ON driver_profile (driver_id, event_timestamp);
EOF
sql -c "VACUUM ANALYZE driver_profile"
sql -Atc "SELECT 'database size: ' || pg_size_pretty(pg_database_size(current_database()))"

# ---------------------------------------------------------------- larder
mkdir -p "$WORK/defs"
cat >"$WORK/larder.yaml" <<EOF
serve:
  definitions: $WORK/defs
  default_namespace: $NS
registry:
  database: sqlite://$WORK/registry.db?mode=rwc
online_store:
  type: redis
  redis:
    url: redis://127.0.0.1:$REDIS_PORT
offline_store:
  postgres:
    host: $PGHOST
    port: $PGPORT
    database: $DB
    user: $PGUSER
  batch_rows: $BATCH_ROWS
namespaces:
  $NS:
    project: $NS
EOF

# source NAME TABLE
source_def() {
    cat <<EOF
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: $1, namespace: $NS }
spec:
  type: postgres
  table: $2
  timestampField: event_timestamp
EOF
}
{
    cat <<EOF
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: $NS }
spec:
  joinKeys: [{ name: driver_id, valueType: INT64 }]
EOF
    source_def driver_daily_stats driver_daily_stats
    source_def driver_hourly driver_hourly
    source_def driver_locations driver_locations
    source_def driver_profile driver_profile
    cat <<EOF
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_daily_stats_fv, namespace: $NS }
spec:
  entities: [driver]
  source: driver_daily_stats
  online: false
  features:
    - { name: conv_rate, valueType: FLOAT }
    - { name: acc_rate, valueType: FLOAT }
    - { name: avg_daily_trips, valueType: INT64 }
    - { name: profit, valueType: DOUBLE }
    - { name: city, valueType: STRING }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_hourly_fv, namespace: $NS }
spec:
  entities: [driver]
  source: driver_hourly
  online: false
  features:
    - { name: trips, valueType: INT32 }
    - { name: earnings, valueType: DOUBLE }
    - { name: online, valueType: BOOL }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_locations_fv, namespace: $NS }
spec:
  entities: [driver]
  source: driver_locations
  online: false
  ttl: 1d
  features:
    - { name: lat, valueType: DOUBLE }
    - { name: lon, valueType: DOUBLE }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_profile_fv, namespace: $NS }
spec:
  entities: [driver]
  source: driver_profile
  features:
    - { name: f0_profit, valueType: DOUBLE }
    - { name: f1_rate, valueType: FLOAT }
    - { name: f2_trips, valueType: INT64 }
    - { name: f3_rating, valueType: INT32 }
    - { name: f4_city, valueType: STRING }
    - { name: f5_active, valueType: BOOL }
    - { name: f6_score, valueType: DOUBLE }
    - { name: f7_lifetime_ms, valueType: INT64 }
    - { name: f8_vehicle, valueType: STRING }
    - { name: f9_hours, valueType: DOUBLE }
EOF
} >"$WORK/defs/bench.yaml"

FEATURES=(
    driver_daily_stats_fv:conv_rate driver_daily_stats_fv:acc_rate driver_daily_stats_fv:avg_daily_trips
    driver_daily_stats_fv:profit driver_daily_stats_fv:city
    driver_hourly_fv:trips driver_hourly_fv:earnings driver_hourly_fv:online
    driver_locations_fv:lat driver_locations_fv:lon
)

declare -A WALL RSS
# timed NAME COMMAND...: runs COMMAND under GNU time; WALL[NAME] in seconds,
# RSS[NAME] in KiB. Its stdout and stderr go to $WORK/NAME.out and .err.
timed() {
    local name=$1 t0 t1
    shift
    t0=$(date +%s%N)
    if ! timeout "$CMD_TIMEOUT" "$TIME" -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; then
        echo "$name failed:" >&2
        tail -n 20 "$WORK/$name.out" "$WORK/$name.err" >&2
        return 1
    fi
    t1=$(date +%s%N)
    WALL[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
    RSS[$name]=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/$name.time")
    printf '   %s: %s s, max RSS %s MiB\n' "$name" "${WALL[$name]}" "$(mib "${RSS[$name]}")"
    cat "$WORK/$name.out" "$WORK/$name.err" | sed 's/^/   | /' | tail -n 5
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

export RUST_LOG=${RUST_LOG:-warn}
for fmt in parquet csv; do
    step "larder historical: $ENTITY_ROWS entity rows x 3 views (10 features) -> $fmt"
    rm -f "$WORK/out.$fmt"
    timed "historical-$fmt" "$LARDER" -c "$WORK/larder.yaml" historical -n "$NS" \
        --features "${FEATURES[@]}" --entities "$WORK/entities.csv" -o "$WORK/out.$fmt"
done

PY=python3
if [ -x "$ROOT/target/pyvenv/bin/python" ]; then PY=$ROOT/target/pyvenv/bin/python; fi
if "$PY" -c 'import pyarrow' 2>/dev/null; then
    OUT_ROWS_PARQUET=$("$PY" - "$WORK/out.parquet" <<'EOF'
import sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
nulls = {v: t.column(c).null_count for v, c in [("daily", "driver_daily_stats_fv__profit"),
                                                ("hourly", "driver_hourly_fv__trips"),
                                                ("locations (TTL 1d)", "driver_locations_fv__lat")]}
print(t.num_rows)
print("   parquet: %d rows, %d columns; null features: %s" % (
    t.num_rows, t.num_columns, ", ".join(f"{v} {n / t.num_rows:.1%}" for v, n in nulls.items())), file=sys.stderr)
EOF
)
else
    OUT_ROWS_PARQUET="? (no pyarrow)"
fi
OUT_ROWS_CSV=$(($(wc -l <"$WORK/out.csv") - 1))
echo "   output rows: parquet $OUT_ROWS_PARQUET, csv $OUT_ROWS_CSV (expected $ENTITY_ROWS)"
stat -c '%n %s' "$WORK/out.parquet" "$WORK/out.csv" | awk '{ printf "   %s %.1f MiB\n", $1, $2 / 1048576 }'

if [ "$EXPLAIN" = 1 ]; then
    # The query larder runs (src/offline/historical/postgres.rs), over the
    # same entity rows in an ordinary table.
    step "EXPLAIN ANALYZE of the point-in-time query"
    sql <<EOF >"$WORK/explain.txt"
CREATE TABLE bench_entities (row_no bigserial, driver_id bigint, event_timestamp timestamptz, trip_id text);
\\copy bench_entities (driver_id, event_timestamp, trip_id) FROM '$WORK/entities.csv' WITH (FORMAT csv, HEADER)
ANALYZE bench_entities;
SET TimeZone TO 'UTC';
EXPLAIN (ANALYZE, BUFFERS)
SELECT e.driver_id, e.event_timestamp, e.trip_id, v0.*, v1.*, v2.*
FROM bench_entities AS e
LEFT JOIN LATERAL (SELECT s.conv_rate, s.acc_rate, s.avg_daily_trips, s.profit, s.city::text
    FROM driver_daily_stats AS s WHERE s.driver_id = e.driver_id AND s.event_timestamp <= e.event_timestamp
    ORDER BY s.event_timestamp DESC LIMIT 1) AS v0 ON true
LEFT JOIN LATERAL (SELECT s.trips, s.earnings, s.online
    FROM driver_hourly AS s WHERE s.driver_id = e.driver_id AND s.event_timestamp <= e.event_timestamp
    ORDER BY s.event_timestamp DESC LIMIT 1) AS v1 ON true
LEFT JOIN LATERAL (SELECT s.lat, s.lon
    FROM driver_locations AS s WHERE s.driver_id = e.driver_id AND s.event_timestamp <= e.event_timestamp
      AND s.event_timestamp >= e.event_timestamp - interval '1 day'
    ORDER BY s.event_timestamp DESC LIMIT 1) AS v2 ON true
ORDER BY e.row_no;
EOF
    sed 's/^/   /' "$WORK/explain.txt"
fi

step "larder materialize-incremental: $MAT_ENTITIES keys x 10 features -> redis"
END=$(date -u +%Y-%m-%dT%H:%M:%SZ)
timed materialize "$LARDER" -c "$WORK/larder.yaml" materialize-incremental "$END" \
    -n "$NS" --views driver_profile_fv
KEYS=$(redis-cli -p "$REDIS_PORT" dbsize)
REDIS_MEM=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory_human/ { print $2 }' | tr -d '\r')
echo "   redis: $KEYS keys (expected $MAT_ENTITIES), used_memory $REDIS_MEM"

step "results"
SOURCE_MIB=$(sql -Atc "SELECT round(pg_total_relation_size('driver_daily_stats') / 1048576.0)")
{
    printf '%-32s %10s %12s %12s %s\n' benchmark "wall s" "rows/s" "max RSS MiB" check
    for fmt in parquet csv; do
        n=historical-$fmt
        rows=$OUT_ROWS_CSV
        [ "$fmt" = parquet ] && rows=$OUT_ROWS_PARQUET
        printf '%-32s %10s %12s %12s %s\n' "historical, 3 views -> $fmt" "${WALL[$n]}" \
            "$(rate "$ENTITY_ROWS" "${WALL[$n]}")" "$(mib "${RSS[$n]}")" "$rows rows out"
    done
    printf '%-32s %10s %12s %12s %s\n' "materialize -> redis" "${WALL[materialize]}" \
        "$(rate "$MAT_ENTITIES" "${WALL[materialize]}")" "$(mib "${RSS[materialize]}")" "$KEYS keys in redis"
    echo
    echo "entity rows: $ENTITY_ROWS; sources: 3 x $SOURCE_ROWS rows ($DRIVERS drivers, ~$SOURCE_MIB MiB each with index);"
    echo "materialized: $MAT_ENTITIES keys x 10 features from $MAT_ROWS rows; batch_rows $BATCH_ROWS"
    echo "targets: historical 1M x 3 views < 60 s; materialize >= 100,000 rows/s"
} | tee "$WORK/results.txt"
