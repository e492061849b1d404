#!/usr/bin/env bash
# Scale scenarios next to the matrix of scripts/bench.sh: memory over many idle SSE streams and
# over a long session, for hudsucker (recording nothing) and mcptap (recording, redacting and
# analysing every flow), with the harness's own load generator and upstream.
#
#   streams  STREAMS (1000) SSE streams open at once through the proxy, each getting
#            STREAM_EVENTS (30) events, one every STREAM_MS (1000) ms: proxy RSS idle and at its
#            peak, per stream, events delivered, first-event and per-event delay.
#   long     LONG_REQUESTS (1,000,000) small requests over 32 connections, proxy RSS sampled
#            every second: its range after the first tenth (the goal: flat within 10 MB).
#
# The soak of issue 18 (100 streams for an hour, RSS flat within 10 MB) is the streams scenario
# made long: `STREAMS=100 STREAM_EVENTS=3600 PROXIES=candidate LONG_REQUESTS=0 scripts/bench-scale.sh`;
# the same 360,000 events in six minutes: add STREAM_MS=100 (memory that grows per event shows
# the same; what grows with time alone does not).
#
# Needs the harness copy that scripts/bench.sh builds (target/bench-harness) and the release
# binary; builds both when missing. Prints one line per proxy and scenario, and appends JSON
# lines to target/bench-harness/results/scale-*.jsonl. Env: PROXIES ("hudsucker candidate").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=${BENCH_HARNESS:-$ROOT/../shared/bench}
B=$ROOT/target/bench-harness
STREAMS=${STREAMS:-1000}
STREAM_EVENTS=${STREAM_EVENTS:-30}
STREAM_MS=${STREAM_MS:-1000}
LONG_REQUESTS=${LONG_REQUESTS:-1000000}
PROXIES=${PROXIES:-"hudsucker candidate"}
if [ ! -x "$B/rs/target/release/perfload" ]; then
  [ -d "$SRC" ] || { echo "benchmark harness not found at $SRC (set BENCH_HARNESS)" >&2; exit 2; }
  mkdir -p "$B" && cp -r "$SRC"/. "$B"/ && chmod -R u+w "$B"
  grep -q '^\[workspace\]' "$B/rs/Cargo.toml" || printf '\n[workspace]\n' >> "$B/rs/Cargo.toml"
  (cd "$B/rs" && cargo build --release 2>&1 | tail -1)
fi
(cd "$ROOT" && cargo build --release --bin mcptap 2>&1 | tail -1)
cd "$B"
[ -f certs/upstream-ca.pem ] || ./gen_certs.sh
BIN=$B/rs/target/release
CONF=$B/mcptap-conf-scale
rm -rf "$CONF" && mkdir -p "$CONF" logs results
"$ROOT/target/release/mcptap" ca --confdir "$CONF" --path >/dev/null
OUT=$B/results/scale-$(date +%Y%m%d-%H%M%S).jsonl
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$BIN/upstream" --ca-cert certs/upstream-ca.pem --ca-key certs/upstream-ca.key --port 18443 \
  >logs/upstream.scale.log 2>&1 &
PIDS+=("$!")
wait_port() { for _ in $(seq 100); do ss -ltnH "sport = :$1" | grep -q . && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }
wait_port 18443
rss_mb() { awk '$1=="VmRSS:" {printf "%.1f", $2/1024}' "/proc/$1/status"; }

start() { # name -> PP (pid), PURL, PCA
  case $1 in
    hudsucker)
      "$BIN/hudproxy" --listen 127.0.0.1:18181 --ca-cert certs/hud-ca.pem --ca-key certs/hud-ca.key \
        --upstream-ca certs/upstream-ca.pem >logs/hud.scale.log 2>&1 &
      PP=$!; PURL=http://127.0.0.1:18181; PCA=certs/hud-ca.pem ;;
    candidate)
      rm -rf "$CONF/sessions"
      "$ROOT/target/release/mcptap" proxy -q --confdir "$CONF" --listen-port 18187 \
        --upstream-ca "$B/certs/upstream-ca.pem" --no-system-roots >logs/mcptap.scale.log 2>&1 &
      PP=$!; PURL=http://127.0.0.1:18187; PCA=$CONF/mcptap-ca-cert.pem ;;
  esac
  PIDS+=("$PP")
  wait_port "${PURL##*:}"
  sleep 1
}
stop() { kill -INT "$PP" 2>/dev/null || true; wait "$PP" 2>/dev/null || true; }

for p in $PROXIES; do
  # streams, RSS sampled every second
  start "$p"
  idle=$(rss_mb "$PP")
  ( while kill -0 "$PP" 2>/dev/null; do echo "$(date +%s.%N) $(rss_mb "$PP")"; sleep 1; done ) >logs/rss.streams.txt &
  SAMPLER=$!
  t0=$(date +%s.%N)
  line=$("$BIN/perfload" --proxy "$PURL" --ca "$PCA" --scenario sse --conc "$STREAMS" --count 1 \
    --sse-n "$STREAM_EVENTS" --sse-ms "$STREAM_MS" --timeout "$((STREAM_EVENTS * STREAM_MS / 1000 + 60))" --pid "$PP")
  t1=$(date +%s.%N)
  after=$(rss_mb "$PP")
  stop
  kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
  python3 - "$p" "$idle" "$after" "$STREAMS" "$line" logs/rss.streams.txt "$t0" "$t1" <<'EOF' | tee -a "$OUT"
import json, sys
name, idle, after, n, line, samples = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
t0, t1 = float(sys.argv[7]), float(sys.argv[8])
r = json.loads(line)
peak = r.get("proxy_rss_max_mb") or 0
rss = [float(l.split()[1]) for l in open(samples) if len(l.split()) == 2 and t0 <= float(l.split()[0]) <= t1]
tenth = rss[len(rss) // 10:] or rss
out = {"label": name, "scenario": f"sse_streams_{n}", "rss_idle_mb": idle, "rss_peak_mb": peak,
       "rss_after_mb": after, "kb_per_stream": round((peak - idle) * 1024 / n, 1),
       "rss_min_after_first_tenth_mb": min(tenth) if tenth else None,
       "rss_max_after_first_tenth_mb": max(tenth) if tenth else None}
for k, v in (("events", "ok"), ("events_expected", "events_expected"), ("first_event_p50_ms", "first_event_p50_ms"),
             ("event_delay_p50_ms", "delay_p50_ms"), ("event_delay_p99_ms", "delay_p99_ms"), ("errors", "errors")):
    if v in r: out[k] = r[v]
print(json.dumps(out))
EOF
  # long session: RSS sampled every second while the requests run
  [ "$LONG_REQUESTS" -gt 0 ] || continue
  start "$p"
  idle=$(rss_mb "$PP")
  ( while kill -0 "$PP" 2>/dev/null; do echo "$(date +%s.%N) $(rss_mb "$PP")"; sleep 1; done ) >logs/rss.scale.txt &
  SAMPLER=$!
  t0=$(date +%s.%N)
  line=$("$BIN/perfload" --proxy "$PURL" --ca "$PCA" --scenario small --conc 32 --duration 3600 \
    --warmup 0 --max-requests "$LONG_REQUESTS" --pid "$PP")
  t1=$(date +%s.%N)
  stop
  kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
  python3 - "$p" "$idle" "$t0" "$t1" "$LONG_REQUESTS" "$line" logs/rss.scale.txt <<'EOF' | tee -a "$OUT"
import json, sys
name, idle, t0, t1, n, line, samples = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
r = json.loads(line)
rss = [float(l.split()[1]) for l in open(samples) if len(l.split()) == 2 and t0 <= float(l.split()[0]) <= t1]
tenth = rss[len(rss) // 10:] or rss
print(json.dumps({"label": name, "scenario": f"long_{n}", "rss_idle_mb": idle,
                  "rss_min_after_first_tenth_mb": min(tenth) if tenth else None,
                  "rss_max_after_first_tenth_mb": max(tenth) if tenth else None,
                  "rss_last_mb": rss[-1] if rss else None,
                  "req_per_s": round(n / (t1 - t0)), "errors": r.get("errors")}))
EOF
done
echo "results: $OUT"
