#!/usr/bin/env bash
# Admin API listing benchmark (BENCHMARKS.md section 3): filtered first page, a deep page by cursor, and a
# full CSV export, against whatever DATABASE_URL points at.
#
#   cargo build --release
#   DATABASE_URL=sqlite:///tmp/ck-bench/bench.db benches/admin_list.sh            # seeds 100k
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/ck_bench benches/admin_list.sh
#
# SEED=0 skips seeding (reuse a seeded database); COUNT=N changes the size; BIN=path picks the
# binary. Seeding uses the hidden `connect-keeper dev seed --count N` (never on real data).
set -euo pipefail
BIN=${BIN:-target/release/connect-keeper}
PORT=${PORT:-18090}
COUNT=${COUNT:-100000}
TOKEN=bench-admin-token-not-secret-0123456789
U=http://127.0.0.1:$PORT

if [ "${SEED:-1}" = 1 ]; then
  RUST_LOG=error "$BIN" migrate   # only serve and migrate create a database
  RUST_LOG=error "$BIN" dev seed --count "$COUNT"
fi
ADMIN_TOKEN=$TOKEN BIND_ADDR=127.0.0.1:$PORT RUST_LOG=error "$BIN" serve &
PID=$!
trap 'kill $PID 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf "$U/healthz" >/dev/null && break; sleep 0.1; done

get() { curl -sf -H "Authorization: Bearer $TOKEN" "$U$1"; }
# median of 7 timings (seconds) of GET $1
timed() {
  for _ in $(seq 7); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" "$U$1"
  done | sort -n | sed -n 4p
}
ms() { python3 -c "print(f'{float(\"$1\")*1000:.1f} ms')"; }

echo "total rows: $(get '/admin/summary' | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')"
for q in \
  'status=enabled&license=active&limit=50' \
  'status=enabled,installed&product=jira&sort=-installed_at&limit=50' \
  'license=trial&sort=trial_end&limit=50' \
  'q=company%2012345&limit=50' \
  'limit=500'; do
  echo "first page  $q: $(ms "$(timed "/admin/installations?$q")")"
done

# Walk 90,000 rows in by cursor (pages of 500), then time the page found there.
for sort in installed_at base_url; do
  cursor=""
  start=$(date +%s.%N)
  for _ in $(seq 180); do
    cursor=$(get "/admin/installations?sort=$sort&limit=500${cursor:+&cursor=$cursor}" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"] or "")')
  done
  walk=$(python3 -c "import time; print(f'{(time.time()-$start)*1000/180:.1f} ms')")
  echo "deep page   sort=$sort at row 90,000 (limit=50): $(ms "$(timed "/admin/installations?sort=$sort&limit=50&cursor=$cursor")")  (walk: $walk per page of 500)"
done

rss() { awk '/VmHWM/ {print $2 " kB"}' /proc/$PID/status; }
echo "server peak RSS before export: $(rss)"
start=$(date +%s.%N)
rows=$(curl -s -H "Authorization: Bearer $TOKEN" "$U/admin/installations?format=csv" | wc -l)
end=$(date +%s.%N)
echo "CSV export: $((rows - 1)) rows in $(python3 -c "print(f'{$end-$start:.2f} s')")"
echo "server peak RSS after export: $(rss)"
