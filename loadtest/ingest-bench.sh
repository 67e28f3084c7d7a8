#!/usr/bin/env bash
# Stream ingestion, timed: `larder ingest` from the local Kafka broker
# (tansu) into Redis and PostgreSQL, end to end.
#
#   1. Throughput: MESSAGES 5-field JSON messages (driver_id, lat, lon,
#      speed, event_timestamp; DRIVERS distinct drivers) are produced into a
#      fresh topic first; then `larder ingest` starts and the time from its
#      first stored row to the last is measured: messages/s with both
#      stores written and offsets committed. RUNS runs, median reported.
#   2. Freshness: `larder ingest` runs while the producer sends RATE
#      messages/s for SECONDS; p50 and p99 of event time -> online write
#      come from its larder_ingest_freshness_seconds histogram (linear
#      within buckets). RUNS runs, medians reported.
#
#   loadtest/ingest-bench.sh
#   MESSAGES=200000 RUNS=1 SECONDS_FRESH=10 loadtest/ingest-bench.sh    # quicker
#
# Needs: the broker on KAFKA (default 127.0.0.1:9092; scripts/services.sh
# starts tansu), PostgreSQL taking user postgres without a password (PGHOST,
# PGPORT, PGUSER), psql, redis-server, redis-cli, python3. Builds larder and
# larder-load in release mode. Creates its own database, Redis (free port,
# temporary folder) and topics, and removes all three at exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

MESSAGES=${MESSAGES:-1000000}
DRIVERS=${DRIVERS:-10000}
PARTITIONS=${PARTITIONS:-4}
RUNS=${RUNS:-3}
RATE=${RATE:-5000}
SECONDS_FRESH=${SECONDS_FRESH:-30}
BATCH=${BATCH:-10000}
LINGER=${LINGER:-100ms}
KAFKA=${KAFKA:-127.0.0.1:9092}
# Extra librdkafka properties for larder ingest, as YAML flow-map entries.
KAFKA_PROPS=${KAFKA_PROPS:-}
KEEP=${KEEP:-0}

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
DB=larder_ingest_bench_$$
NS=bench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LARDER=$TARGET/release/larder
LOAD=$TARGET/release/larder-load

for tool in psql redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/larder-ingest-bench.XXXXXX")
REDIS_PID=
INGEST_PID=
DB_CREATED=0
TOPICS=()
cleanup() {
    if [ -n "$INGEST_PID" ]; then kill "$INGEST_PID" 2>/dev/null || true; fi
    if [ "${#TOPICS[@]}" -gt 0 ]; then
        "$LOAD" delete-topics --bootstrap "$KAFKA" "${TOPICS[@]}" || true
    fi
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
    if [ "$DB_CREATED" = 1 ]; then
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building larder and larder-load (release)"
cargo build --release --locked -p larder -p larder-loadtest 2>&1 | tail -1

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" --daemonize no &
REDIS_PID=$!
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
DB_CREATED=1

METRICS_PORT=$(free_port)

# write_definitions TOPIC
write_definitions() {
    cat >"$WORK/definitions.yaml" <<EOF
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: $NS }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: locations, namespace: $NS }
spec: { type: postgres, table: locations, timestampField: event_timestamp }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: locations_stream, namespace: $NS }
spec:
  type: kafka
  bootstrapServers: $KAFKA
  topic: $1
  batchSource: locations
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: locations_fv, namespace: $NS }
spec:
  entities: [driver]
  streamSource: locations_stream
  features:
    - { name: lat, valueType: DOUBLE }
    - { name: lon, valueType: DOUBLE }
    - { name: speed, valueType: DOUBLE }
EOF
    cat >"$WORK/larder.yaml" <<EOF
serve: { definitions: $WORK/definitions.yaml }
online_store: { type: redis, redis: { url: "redis://127.0.0.1:$REDIS_PORT" } }
offline_store: { postgres: { database: $DB } }
ingest: { listen: "127.0.0.1:$METRICS_PORT", batch_messages: $BATCH, batch_linger: $LINGER, start_from: $2, kafka: { $KAFKA_PROPS } }
EOF
}

reset_stores() {
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    psql -X -q -d "$DB" -c "DROP TABLE IF EXISTS locations;
        CREATE TABLE locations (driver_id bigint NOT NULL, event_timestamp timestamptz NOT NULL,
            lat double precision, lon double precision, speed double precision,
            PRIMARY KEY (driver_id, event_timestamp));" >/dev/null
}

offline_rows() {
    psql -X -qtA -d "$DB" -c "SELECT count(*) FROM locations"
}

start_ingest() {
    "$LARDER" -c "$WORK/larder.yaml" ingest --source locations_stream -n "$NS" \
        >"$WORK/ingest-$1.out" 2>"$WORK/ingest-$1.err" &
    INGEST_PID=$!
    until curl -sf "http://127.0.0.1:$METRICS_PORT/health" >/dev/null 2>&1; do
        kill -0 "$INGEST_PID" 2>/dev/null || { cat "$WORK/ingest-$1.err" >&2; exit 1; }
        sleep 0.1
    done
}

stop_ingest() {
    kill -TERM "$INGEST_PID"
    wait "$INGEST_PID" || true
    INGEST_PID=
}

median() {
    python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"
}

echo "== throughput: $MESSAGES messages, $DRIVERS drivers, $PARTITIONS partitions, batches of $BATCH"
rates=()
for run in $(seq 1 "$RUNS"); do
    topic=ingest-bench-$$-tp-$run
    TOPICS+=("$topic")
    reset_stores
    write_definitions "$topic" earliest
    "$LOAD" produce --bootstrap "$KAFKA" --topic "$topic" --partitions "$PARTITIONS" \
        --messages "$MESSAGES" --drivers "$DRIVERS" 2>&1 | sed 's/^/  /'
    start_ingest "tp-$run"
    t0=""
    c0=0
    while :; do
        c=$(offline_rows)
        now=$(date +%s.%N)
        if [ -z "$t0" ] && [ "$c" -gt 0 ]; then t0=$now; c0=$c; fi
        if [ "$c" -ge "$MESSAGES" ]; then t1=$now; break; fi
        kill -0 "$INGEST_PID" 2>/dev/null || { cat "$WORK/ingest-tp-$run.err" >&2; exit 1; }
        sleep 0.2
    done
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics-tp-$run.txt"
    stop_ingest
    rate=$(python3 -c "print(round(($MESSAGES - $c0) / ($t1 - $t0)))")
    online=$(redis-cli -p "$REDIS_PORT" dbsize)
    batches=$(python3 - "$WORK/metrics-tp-$run.txt" <<'PY'
import sys
m = {}
for line in open(sys.argv[1]):
    if line.startswith("larder_ingest_batch_write_duration_seconds_"):
        k, v = line.rsplit(" ", 1)
        m[k.split("{")[0]] = float(v)
n = m.get("larder_ingest_batch_write_duration_seconds_count", 0)
s = m.get("larder_ingest_batch_write_duration_seconds_sum", 0)
print(f"{int(n)} batches, {1000 * s / max(n, 1):.0f} ms per batch write")
PY
)
    echo "  run $run: $rate msgs/s end to end ($MESSAGES offline rows, $online online keys; $batches)"
    rates+=("$rate")
done
echo "  median: $(median "${rates[@]}") msgs/s"

echo "== freshness at $RATE msgs/s for ${SECONDS_FRESH}s"
p50s=()
p99s=()
for run in $(seq 1 "$RUNS"); do
    topic=ingest-bench-$$-fr-$run
    TOPICS+=("$topic")
    reset_stores
    "$LOAD" produce --bootstrap "$KAFKA" --topic "$topic" --partitions "$PARTITIONS" \
        --messages 1 --drivers 1 >/dev/null 2>&1
    write_definitions "$topic" latest
    start_ingest "fr-$run"
    sleep 3 # joined the group
    "$LOAD" produce --bootstrap "$KAFKA" --topic "$topic" \
        --messages $((RATE * SECONDS_FRESH)) --rate "$RATE" --drivers "$DRIVERS" 2>&1 | sed 's/^/  /'
    sleep 2
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics-fr-$run.txt"
    stop_ingest
    read -r p50 p99 n < <(python3 - "$WORK/metrics-fr-$run.txt" <<'PY'
import sys
buckets = []
for line in open(sys.argv[1]):
    if line.startswith("larder_ingest_freshness_seconds_bucket{"):
        le = line.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
total = buckets[-1][1]
def q(p):
    target, lo, below = p * total, 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * (target - below) / max(count - below, 1e-9)
        lo, below = le, count
print(f"{q(0.5)*1000:.0f} {q(0.99)*1000:.0f} {int(total)}")
PY
)
    echo "  run $run: p50 ${p50} ms, p99 ${p99} ms over $n rows"
    p50s+=("$p50")
    p99s+=("$p99")
done
echo "  median: p50 $(median "${p50s[@]}") ms, p99 $(median "${p99s[@]}") ms"
