#!/usr/bin/env bash
# Side-by-side: larder (gRPC and HTTP), Feast 0.67's Python feature server
# (HTTP; its Python server has no gRPC mode) and the direct-Redis floor, on the same Redis data, driven
# by the same load generator with the same request shapes.
#
#   loadtest/compare.sh            # 1,000,000 drivers, ~25 minutes
#   ENTITIES=100000 QUICK=1 loadtest/compare.sh
#
# Needs: redis-server, python3 with venv, network access to PyPI (once, for
# feast==0.67.0). Everything runs on 127.0.0.1 and is stopped at the end.
# Results: $WORK/results/*.json (ghz-shaped) and the table printed last.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
WORK=${WORK:-$ROOT/target/compare}
ENTITIES=${ENTITIES:-1000000}
WIDE_ENTITIES=${WIDE_ENTITIES:-10000}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
REDIS_PORT=${REDIS_PORT:-16390}
LARDER_PORT=${LARDER_PORT:-16566}
# A second Redis whose hashes are hash tables rather than listpacks (see
# docs/PERFORMANCE.md, "Redis hash encoding"); TUNED=0 skips it.
TUNED=${TUNED:-1}
REDIS_TUNED_PORT=${REDIS_TUNED_PORT:-16391}
LARDER_TUNED_PORT=${LARDER_TUNED_PORT:-16567}
# A relay that forwards to Redis and does nothing else (larder-load relay):
# the floor read through it is what any server between client and Redis
# costs at the least.
RELAY_PORT=${RELAY_PORT:-16392}
FEAST_PORT=${FEAST_PORT:-16600}
FEAST_WIDE_PORT=${FEAST_WIDE_PORT:-16601}
FEAST_WORKERS=${FEAST_WORKERS:-$(nproc)}
# larder's runtime threads. On this machine's 2 cores, shared with Redis
# and the load generator, one thread serves more and faster than two
# (docs/PERFORMANCE.md); a server with cores of its own uses them all.
LARDER_WORKERS=${LARDER_WORKERS:-1}
# The load generator's runtime threads (its own default is 1: it should
# take as little of the shared cores as it can).
LOAD_THREADS=${LOAD_THREADS:-1}
RSS_SECONDS=${RSS_SECONDS:-60}
if [ -n "${QUICK:-}" ]; then DURATION=4s; WARMUP=1s; RSS_SECONDS=20; fi

mkdir -p "$WORK/results" "$WORK/defs"
rm -f "$WORK"/results/*.json
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    redis-cli -p "$REDIS_TUNED_PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT

wait_http() { # url
    for _ in $(seq 1 150); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "no answer from $1" >&2
    return 1
}

echo "== build"
cargo build --release --workspace --locked
LARDER=$ROOT/target/release/larder
LOAD=$ROOT/target/release/larder-load

echo "== redis on 127.0.0.1:$REDIS_PORT (its own, nothing kept on disk)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --dir "$WORK" --logfile "$WORK/redis.log"
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" flushall >/dev/null
REDIS=redis://127.0.0.1:$REDIS_PORT

echo "== data: $ENTITIES drivers x 5 views x 10 features; $WIDE_ENTITIES drivers x 25 views x 10 features"
"$LOAD" generate --redis "$REDIS" --namespace loadtest --entities "$ENTITIES" --views 5 --features 10 \
    --manifests "$WORK/defs/loadtest.yaml" --feast-repo "$WORK/feast-main"
"$LOAD" generate --redis "$REDIS" --namespace loadtest-wide --entities "$WIDE_ENTITIES" --views 25 --features 10 \
    --manifests "$WORK/defs/loadtest-wide.yaml" --feast-repo "$WORK/feast-wide"
redis-cli -p "$REDIS_PORT" info memory | grep used_memory_human
if [ "$TUNED" = 1 ]; then
    echo "== tuned redis on 127.0.0.1:$REDIS_TUNED_PORT: hash-max-listpack-entries 16, same $ENTITIES drivers"
    redis-server --port "$REDIS_TUNED_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --hash-max-listpack-entries 16 \
        --daemonize yes --dir "$WORK" --logfile "$WORK/redis-tuned.log"
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_TUNED_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$REDIS_TUNED_PORT" flushall >/dev/null
    "$LOAD" generate --redis "redis://127.0.0.1:$REDIS_TUNED_PORT" --namespace loadtest --entities "$ENTITIES" \
        --views 5 --features 10
    redis-cli -p "$REDIS_TUNED_PORT" info memory | grep used_memory_human
fi

echo "== feast 0.67.0 in $WORK/venv"
if [ ! -x "$WORK/venv/bin/feast" ]; then
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q 'feast[redis]==0.67.0'
fi
for repo in feast-main feast-wide; do
    (cd "$WORK/$repo" && "$WORK/venv/bin/python" - <<'EOF'
# A one-row source file: `feast apply` wants the batch source to exist; the
# online data was written straight into Redis by larder-load.
import datetime as dt
import pandas as pd
cols = {"driver_id": [0], "event_timestamp": [pd.Timestamp(dt.datetime.now(dt.timezone.utc))]}
for f in range(10):
    cols[f"f{f}"] = [[1.0], [1.0], [1], ["a"], [True]][f % 5]
pd.DataFrame(cols).to_parquet("data/source.parquet")
EOF
    "$WORK/venv/bin/feast" apply >/dev/null)
done

echo "== servers"
cat > "$WORK/larder.yaml" <<EOF
serve:
  listen: 127.0.0.1:$LARDER_PORT
  definitions: $WORK/defs
  default_namespace: loadtest
online_store:
  type: redis
  redis:
    url: $REDIS
EOF
TOKIO_WORKER_THREADS=$LARDER_WORKERS RUST_LOG=warn "$LARDER" serve -c "$WORK/larder.yaml" >"$WORK/larder.log" 2>&1 &
LARDER_PID=$!
PIDS+=("$LARDER_PID")
# Feast gets every core and no periodic worker restarts: its best showing.
FEAST_OPTS=(-h 127.0.0.1 --no-access-log -w "$FEAST_WORKERS" --max-requests 100000000)
(cd "$WORK/feast-main" && exec "$WORK/venv/bin/feast" serve -p "$FEAST_PORT" "${FEAST_OPTS[@]}" >"$WORK/feast-main.log" 2>&1) &
PIDS+=($!)
(cd "$WORK/feast-wide" && exec "$WORK/venv/bin/feast" serve -p "$FEAST_WIDE_PORT" "${FEAST_OPTS[@]}" >"$WORK/feast-wide.log" 2>&1) &
PIDS+=($!)
if [ "$TUNED" = 1 ]; then
    sed -e "s/$LARDER_PORT/$LARDER_TUNED_PORT/; s/$REDIS_PORT/$REDIS_TUNED_PORT/" "$WORK/larder.yaml" >"$WORK/larder-tuned.yaml"
    TOKIO_WORKER_THREADS=$LARDER_WORKERS RUST_LOG=warn "$LARDER" serve -c "$WORK/larder-tuned.yaml" >"$WORK/larder-tuned.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$LARDER_TUNED_PORT/ready"
fi
"$LOAD" relay --listen "127.0.0.1:$RELAY_PORT" --to "127.0.0.1:$REDIS_PORT" --stop-after 3h >"$WORK/relay.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$LARDER_PORT/ready"
wait_http "http://127.0.0.1:$FEAST_PORT/health"
wait_http "http://127.0.0.1:$FEAST_WIDE_PORT/health"
sleep 2

# run NAME TARGET NAMESPACE VIEWS ROWS FEATURES MODE...
run() {
    local name=$1 target=$2 ns=$3 views=$4 rows=$5 features=$6
    shift 6
    local entities=$ENTITIES
    [ "$ns" = loadtest-wide ] && entities=$WIDE_ENTITIES
    TOKIO_WORKER_THREADS=$LOAD_THREADS "$LOAD" run --target "$target" --namespace "$ns" --entities "$entities" --views "$views" \
        --rows "$rows" --request-features "$features" --duration "$DURATION" --warmup "$WARMUP" \
        --label "$name" --json "$WORK/results/$name.json" "$@" || echo "   ($name failed)"
}

echo "== closed loop: throughput by concurrency"
for shape in "1 50 loadtest 5" "1 250 loadtest-wide 25" "100 50 loadtest 5"; do
    read -r rows features ns views <<<"$shape"
    s="${rows}x${features}"
    feast_http=$FEAST_PORT
    [ "$ns" = loadtest-wide ] && feast_http=$FEAST_WIDE_PORT
    for c in 4 16 64; do
        run "larder-grpc.$s.c$c" "grpc://127.0.0.1:$LARDER_PORT" "$ns" "$views" "$rows" "$features" --concurrency "$c"
        run "larder-http.$s.c$c" "http://127.0.0.1:$LARDER_PORT" "$ns" "$views" "$rows" "$features" --concurrency "$c"
        run "floor.$s.c$c" "$REDIS" "$ns" "$views" "$rows" "$features" --concurrency "$c"
        run "floor-hgetall.$s.c$c" "$REDIS" "$ns" "$views" "$rows" "$features" --concurrency "$c" --read-command hgetall
    done
    for c in 1 2 4 8; do
        run "feast-http.$s.c$c" "http://127.0.0.1:$feast_http" "$ns" "$views" "$rows" "$features" --concurrency "$c"
    done
done

echo "== open loop: constant rates (1x50 at 1,000/s; 100x50 at 200/s and 1,000/s)"
for shape in "1 50 loadtest 5 1000" "100 50 loadtest 5 200" "100 50 loadtest 5 1000"; do
    read -r rows features ns views rate <<<"$shape"
    s="${rows}x${features}"
    run "larder-grpc.$s.r$rate" "grpc://127.0.0.1:$LARDER_PORT" "$ns" "$views" "$rows" "$features" --rate "$rate"
    run "larder-http.$s.r$rate" "http://127.0.0.1:$LARDER_PORT" "$ns" "$views" "$rows" "$features" --rate "$rate"
    run "floor.$s.r$rate" "$REDIS" "$ns" "$views" "$rows" "$features" --rate "$rate"
    run "floor-hgetall.$s.r$rate" "$REDIS" "$ns" "$views" "$rows" "$features" --rate "$rate" --read-command hgetall
    run "floor-relay.$s.r$rate" "redis://127.0.0.1:$RELAY_PORT" "$ns" "$views" "$rows" "$features" --rate "$rate" --read-command hgetall
    if [ "$TUNED" = 1 ]; then
        run "larder-grpc-ht.$s.r$rate" "grpc://127.0.0.1:$LARDER_TUNED_PORT" "$ns" "$views" "$rows" "$features" --rate "$rate"
        run "floor-ht.$s.r$rate" "redis://127.0.0.1:$REDIS_TUNED_PORT" "$ns" "$views" "$rows" "$features" --rate "$rate" --read-command auto
    fi
done
echo "== open loop: the transport alone (gRPC GetFeastServingInfo; Redis PING, direct and through the relay), 1,000/s"
run "larder-grpc-noop.1x50.r1000" "grpc://127.0.0.1:$LARDER_PORT" loadtest 5 1 50 --rate 1000 --request noop
run "floor-ping.1x50.r1000" "$REDIS" loadtest 5 1 50 --rate 1000 --request noop
run "floor-relay-ping.1x50.r1000" "redis://127.0.0.1:$RELAY_PORT" loadtest 5 1 50 --rate 1000 --request noop
echo "== open loop: 1x50 at 5,000/s and 10,000/s (the p50 over the floor as the rate rises)"
for rate in 5000 10000; do
    run "larder-grpc.1x50.r$rate" "grpc://127.0.0.1:$LARDER_PORT" loadtest 5 1 50 --rate "$rate"
    run "floor-hgetall.1x50.r$rate" "$REDIS" loadtest 5 1 50 --rate "$rate" --read-command hgetall
    run "floor-relay.1x50.r$rate" "redis://127.0.0.1:$RELAY_PORT" loadtest 5 1 50 --rate "$rate" --read-command hgetall
done

echo "== memory: larder RSS across a ${RSS_SECONDS}s run at 1x50, concurrency 16"
rss() { awk '/VmRSS/ {print $2}' "/proc/$LARDER_PID/status"; }
RSS_START=$(rss)
DURATION=${RSS_SECONDS}s WARMUP=0s run "larder-grpc.1x50.rss" "grpc://127.0.0.1:$LARDER_PORT" loadtest 5 1 50 --concurrency 16
RSS_END=$(rss)
# Only a run that happened measures anything.
if [ -f "$WORK/results/larder-grpc.1x50.rss.json" ]; then
    echo "{\"rss_kib_start\": $RSS_START, \"rss_kib_end\": $RSS_END, \"seconds\": ${RSS_SECONDS}}" >"$WORK/results/rss.json"
else
    echo "   RSS not measured: the load run failed"
fi

echo
python3 "$ROOT/loadtest/summarize.py" "$WORK/results"
