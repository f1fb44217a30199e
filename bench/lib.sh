# Shared by the bench/*.sh scripts (sourced, not run). Builds idemd and
# idemctl into a temp dir, starts idemd on a free loopback port, and cleans
# everything up on exit. Knobs (env): BENCH_DURATION (each phase, default
# 10s; 4s in the scripts that run rounds), BENCH_ROUNDS (floor/idem rounds of a --floor bench, default 5: the
# ratios reported are the medians), BENCH_CONCURRENCY (default 50),
# BENCH_CONNS (default 2),
# BENCH_OUT (where JSON/SVG results go, default a new temp dir kept after the run),
# IDEM_BENCH_POSTGRES_URL, IDEM_BENCH_REDIS_URL.
set -euo pipefail

ROOT=${IDEM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-50}
BENCH_CONNS=${BENCH_CONNS:-2}
PG_URL=${IDEM_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
REDIS_URL=${IDEM_BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
TMP=$(mktemp -d -t idem-bench.XXXXXX)
# Not under $TMP: the exit removes that, and the scripts end by naming
# where the results are.
BENCH_OUT=${BENCH_OUT:-$(mktemp -d -t idem-bench-out.XXXXXX)}
mkdir -p "$BENCH_OUT"
IDEMD_PID=
IDEMD_ADDR=
CLEANUPS=()

cleanup() {
	stop_idemd
	local c
	for c in "${CLEANUPS[@]+"${CLEANUPS[@]}"}"; do eval "$c" || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

machine() {
	echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

build() {
	log "building idemd and idemctl…"
	(cd "$ROOT" && go build -o "$TMP/idemd" ./cmd/idemd && go build -o "$TMP/idemctl" ./cmd/idemctl)
	IDEMD=$TMP/idemd
	IDEMCTL=$TMP/idemctl
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_idemd STORE_URL [idemd flags…]: starts idemd, waits until it serves.
# Returns 1 (with the reason on stderr) if it does not come up.
start_idemd() {
	local store=$1
	shift
	local port
	port=$(free_port)
	IDEMD_ADDR=127.0.0.1:$port
	"$IDEMD" --listen "$IDEMD_ADDR" --store "$store" "$@" >"$TMP/idemd.log" 2>&1 &
	IDEMD_PID=$!
	local i
	for i in $(seq 1 100); do
		if ! kill -0 "$IDEMD_PID" 2>/dev/null; then
			log "idemd did not start with --store ${store%%\?*}: $(tail -n 3 "$TMP/idemd.log")"
			IDEMD_PID=
			return 1
		fi
		if "$IDEMCTL" --addr "$IDEMD_ADDR" --timeout 1s health >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	log "idemd did not become healthy in 20s: $(tail -n 3 "$TMP/idemd.log")"
	stop_idemd
	return 1
}

stop_idemd() {
	if [ -n "${IDEMD_PID:-}" ]; then
		kill "$IDEMD_PID" 2>/dev/null || true
		wait "$IDEMD_PID" 2>/dev/null || true
		IDEMD_PID=
	fi
}

rss_mib() { awk '/^VmRSS:/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

# bench NAME [idemctl bench flags…]: runs idemctl bench against the running
# idemd with its PID and keeps NAME.json. With --floor it runs
# BENCH_ROUNDS alternating rounds. idemctl bench exits 1 when any call
# failed (after writing its report): the script then stops there, as it
# does on any other failure, with the report kept.
bench() {
	local name=$1
	shift
	local rounds=()
	case " $* " in *" --floor "*) rounds=(--rounds "$BENCH_ROUNDS") ;; esac
	local rc=0
	timeout 900 "$IDEMCTL" --addr "$IDEMD_ADDR" --timeout 30s bench --server-pid "$IDEMD_PID" \
		--concurrency "$BENCH_CONCURRENCY" --conns "$BENCH_CONNS" --duration "$BENCH_DURATION" -o json \
		"${rounds[@]+"${rounds[@]}"}" "$@" >"$BENCH_OUT/$name.json" || rc=$?
	if [ "$rc" -ne 0 ]; then
		log "bench $name: idemctl bench exited $rc; its report, if any, is $BENCH_OUT/$name.json"
		return "$rc"
	fi
}

# jget FILE EXPR: a Python expression over the report r (None-safe).
jget() {
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# median_idem_rate FILE: the median of a --floor report's rounds' idem
# rates (a one-round report's idem rate). Not the median round's own rate:
# that round is chosen by its ratio to the floor, and its rate can land on
# a fast or slow moment of the host.
median_idem_rate() {
	python3 - "$1" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
rounds = r.get("rounds") or []
print(statistics.median(x["idem_ops_per_sec"] for x in rounds) if rounds else r["idem"]["ops_per_sec"])
PY
}

summary() {
	python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def line(p):
    l = p["latency_us"]
    cpu = p.get("server_cpu")
    cpu = f'{cpu["cpu_us_per_op"]:.1f} µs cpu/op' if cpu else "-"
    return f'{p["name"]:5} {p["ops_per_sec"]:9.0f} ops/s  p50 {l["p50"]/1000:.2f} ms  p99 {l["p99"]/1000:.2f} ms  errors {p["errors"]}  {cpu}'
rounds = r.get("rounds") or []
for i, rd in enumerate(rounds, 1):
    q = rd["ratios"]
    s = f'  round {i}: floor {rd["floor_ops_per_sec"]:.0f}/s, idem {rd["idem_ops_per_sec"]:.0f}/s = {q["throughput"]:.2f}x'
    if q.get("server_cpu_per_op"):
        s += f'; server CPU {rd["idem_cpu_us_per_op"]:.1f} / {rd["floor_cpu_us_per_op"]:.1f} µs per op = {q["server_cpu_per_op"]:.2f}x'
    if rd.get("floor_errors") or rd.get("idem_errors"):
        s += f'; errors: floor {rd.get("floor_errors", 0)}, idem {rd.get("idem_errors", 0)}'
    print(s)
if rounds:
    # Chosen by its throughput ratio: its CPU figures need not give the
    # median CPU ratio printed below.
    print("  median round by throughput ratio:")
for k in ("floor", "idem"):
    if r.get(k):
        print("  " + line(r[k]))
q = r.get("ratios")
if q:
    s = f'  idem/floor{" (medians of %d rounds)" % len(rounds) if rounds else ""}: throughput {q["throughput"]:.2f}x'
    if q.get("server_cpu_per_op"):
        s += f', server CPU per op {q["server_cpu_per_op"]:.2f}x'
    print(s)
PY
}
