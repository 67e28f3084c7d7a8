#!/usr/bin/env bash
# Schema-driven fuzzing of the registry API: schemathesis (from PyPI)
# generates requests from docs/openapi.json against a local registry on a
# fresh SQLite file and fails on any 5xx. Bounded: EXAMPLES per operation.
#
#   scripts/fuzz-registry.sh            # about 3 minutes
#   EXAMPLES=200 scripts/fuzz-registry.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=${WORK:-target/fuzz-registry}
PORT=${PORT:-16570}
EXAMPLES=${EXAMPLES:-30}
rm -rf "$WORK/db" && mkdir -p "$WORK/db"
if [ ! -x "$WORK/venv/bin/schemathesis" ]; then
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q schemathesis
fi
cargo build --locked
RUST_LOG=warn target/debug/larder registry serve \
    --database "sqlite://$PWD/$WORK/db/registry.db?mode=rwc" --listen "127.0.0.1:$PORT" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done
# Watches may wait up to 60 s by design: the request timeout allows them.
"$WORK/venv/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
    --checks not_a_server_error --max-examples "$EXAMPLES" --workers 2 --request-timeout 70
