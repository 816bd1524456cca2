#!/usr/bin/env bash
# Load test of the whole server on loopback: GET /healthz (no verification) against
# GET /api/whoami (every request verified: context JWT in the Authorization header, tenant
# from the cache, HMAC, license decision by a free grant), and GET /api/whoami with a Forge
# Invocation Token (Authorization: Bearer; key from the cached Forge key set, installation by
# installation id from memory, licence from the token's app.license), in the same run.
#
#   scripts/load.sh [DURATION_SECS] [CONNECTIONS] [THREADS] [ROUNDS]   (defaults: 10 64 2 3)
#
# Builds --release, starts the server with a fresh SQLite database in a temporary folder,
# installs a tenant with a correctly signed `installed` (examples/load_setup.rs serves the
# test key), then runs wrk against each route in turn, ROUNDS times, and prints per run req/s,
# p50, p99, errors and the server's CPU time per request (from /proc, user + system). wrk
# shares the machine's cores with the server, so single runs vary by ±10%: the verdict is the
# median of the rounds' ratios. The verified route should keep at least 80% of the plain
# route's req/s, with no errors. For the FIT route the script also prints its server CPU per
# request against the Connect context-token route's (the Forge aim: at most 1.5x); that ratio
# is reported, not enforced.
set -euo pipefail

DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
THREADS="${3:-2}"
ROUNDS="${4:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

if ! command -v wrk >/dev/null; then
    echo "wrk not found: installing it (Debian package)" >&2
    apt-get install -y wrk >/dev/null
fi

cargo build --release --quiet --bin connect-keeper --example load_setup
BIN="$ROOT/target/release/connect-keeper"
SETUP="$ROOT/target/release/examples/load_setup"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

"$SETUP" keys "$WORK/keys.port" &
PIDS+=($!)
for _ in $(seq 50); do [[ -s "$WORK/keys.port" ]] && break; sleep 0.1; done
KEYS_PORT="$(cat "$WORK/keys.port")"

# A free port for the server (bind-and-release; the race is harmless on a quiet machine).
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
APP="http://127.0.0.1:$PORT"
DB="sqlite://$WORK/load.db"

# FORGE_APP_ID: the test app of connect_keeper::forge::testing (APP_UUID), whose FITs
# load_setup mints with the key it publishes at /jwks.json.
DATABASE_URL="$DB" BIND_ADDR="127.0.0.1:$PORT" APP_BASE_URL="$APP" \
INSTALL_KEYS_URL="http://127.0.0.1:$KEYS_PORT" RUST_LOG=warn LOG_FORMAT=json \
FORGE_APP_ID="6f0d9f4c-3c59-4a4e-9b52-2f9c8a1e7d10" \
FORGE_JWKS_URL="http://127.0.0.1:$KEYS_PORT/jwks.json" \
    "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=($SERVER_PID)
for _ in $(seq 100); do curl -fs "$APP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$APP/healthz" >/dev/null || { echo "server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }

TOKEN="$("$SETUP" install "$APP" "$DB")"
# One FIT reused for the whole run, as Forge's bridge reuses the token of requestRemote.
FIT="$("$SETUP" fit "$APP")"

# For the "new token per request" run: each wrk thread cycles through its own 20,000 tokens,
# more than the server remembers (at most verified_tokens::DEFAULT_CAPACITY = 16,384), so every
# request is decoded and its HMAC computed as if the token were new.
PER_THREAD=20000
"$SETUP" tokens $((PER_THREAD * THREADS)) >"$WORK/tokens.txt"

# wrk counts non-2xx answers only in its summary line; this script makes them visible.
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d non2xx=%d socket_errors=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
EOF

# The same report, with requests that each carry the next token of the thread's own slice.
cat "$WORK/report.lua" - >"$WORK/fresh.lua" <<EOF
local per_thread = $PER_THREAD
local next_id = 0
setup = function(thread)
  thread:set("slice", next_id)
  next_id = next_id + 1
end
local tokens, i = {}, 0
init = function(args)
  local all = {}
  for line in io.lines("$WORK/tokens.txt") do all[#all + 1] = line end
  for n = 1, per_thread do tokens[n] = all[slice * per_thread + n] end
end
request = function()
  i = i % per_thread + 1
  return wrk.format("GET", nil, {["Authorization"] = "JWT " .. tokens[i]})
end
EOF

TICKS="$(getconf CLK_TCK)"
cpu_ticks() { # user + system time of the server so far, in clock ticks
    awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"
}

run() { # NAME PATH LUA_SCRIPT [wrk options…] — prints one line, sets RPS, ERRORS and CPU
    local name="$1" path="$2" script="$3"; shift 3
    local line before after requests
    before="$(cpu_ticks)"
    line="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$script" "$@" "$APP$path" | grep '^RESULT')"
    after="$(cpu_ticks)"
    requests="$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")"
    RPS="$(sed -E 's/.*rps=([0-9]+).*/\1/' <<<"$line")"
    ERRORS=$(( $(sed -E 's/.*non2xx=([0-9]+) socket_errors=([0-9]+).*/\1 + \2/' <<<"$line") ))
    CPU="$(python3 -c "print(f'{($after - $before) / $TICKS / max($requests, 1) * 1e6:.1f}')")"
    printf '%-16s %s server_cpu_us_per_req=%s\n' "$name" "${line#RESULT }" "$CPU"
}

echo "wrk: $THREADS threads, $CONNECTIONS connections, ${DURATION}s per route, $ROUNDS rounds; server: release build, SQLite"
echo "whoami: one context token reused (an iframe's API calls); whoami-fresh: a token not seen before on every request; whoami-fit: one FIT reused (Forge Remote calls)"
RATIOS=() FRESH_RATIOS=() FIT_CPU_RATIOS=() TOTAL_ERRORS=0
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    run "GET /healthz" /healthz "$WORK/report.lua"
    PLAIN_RPS=$RPS TOTAL_ERRORS=$((TOTAL_ERRORS + ERRORS))
    run "GET /api/whoami" /api/whoami "$WORK/report.lua" -H "Authorization: JWT $TOKEN"
    AUTH_RPS=$RPS AUTH_CPU=$CPU TOTAL_ERRORS=$((TOTAL_ERRORS + ERRORS))
    run "  whoami-fit" /api/whoami "$WORK/report.lua" -H "Authorization: Bearer $FIT"
    FIT_CPU=$CPU TOTAL_ERRORS=$((TOTAL_ERRORS + ERRORS))
    run "  whoami-fresh" /api/whoami "$WORK/fresh.lua"
    FRESH_RPS=$RPS TOTAL_ERRORS=$((TOTAL_ERRORS + ERRORS))
    RATIOS+=("$(python3 -c "print(f'{$AUTH_RPS / $PLAIN_RPS * 100:.1f}')")")
    FRESH_RATIOS+=("$(python3 -c "print(f'{$FRESH_RPS / $PLAIN_RPS * 100:.1f}')")")
    FIT_CPU_RATIOS+=("$(python3 -c "print(f'{$FIT_CPU / max($AUTH_CPU, 0.1):.2f}')")")
    echo "  verified/plain req/s: ${RATIOS[-1]}%  (fresh tokens: ${FRESH_RATIOS[-1]}%)"
    echo "  server CPU per request, FIT/Connect context token: ${FIT_CPU_RATIOS[-1]}x"
done

median() { (IFS=,; python3 -c "import statistics; print(round(statistics.median([$*]), 1))"); }
MEDIAN="$(median "${RATIOS[@]}")"
echo "median verified/plain req/s over $ROUNDS rounds: ${MEDIAN}%  (rounds: ${RATIOS[*]}; errors: $TOTAL_ERRORS)"
echo "median with a new token per request: $(median "${FRESH_RATIOS[@]}")%  (rounds: ${FRESH_RATIOS[*]})"
echo "median server CPU per request, FIT/Connect context token: $(median "${FIT_CPU_RATIOS[@]}")x  (rounds: ${FIT_CPU_RATIOS[*]}; aim <= 1.5x)"
if python3 -c "import sys; sys.exit(0 if $MEDIAN >= 80 and $TOTAL_ERRORS == 0 else 1)"; then
    echo "OK: the verified route keeps >= 80% of the plain route's throughput with no errors"
else
    echo "FAIL: below 80% or errors" >&2
    exit 1
fi
