#!/usr/bin/env bash
# Where idemd's CPU goes under load: Reserve of new keys, 50 callers, on
# memory and pebble, sampled with `perf record` on the idemd process (no
# idemd flag needed; Go binaries carry their symbols), then self time
# grouped by who spends it: gRPC/HTTP/2, protobuf, interceptors, idem's own code, the
# store, the Go runtime (GC and allocation, scheduler), the kernel.
#
#   bench/profile.sh            # BENCH_DURATION=10s, BENCH_PROFILE_STORES="memory pebble redis postgres"
source "$(dirname "$0")/lib.sh"
command -v perf >/dev/null || { echo "skipped: perf is not installed"; exit 0; }
build
machine
secs=${BENCH_DURATION%s}
for name in ${BENCH_PROFILE_STORES:-memory pebble redis postgres}; do
	case $name in
	memory) store=memory:// ;;
	pebble) store="pebble://$TMP/pebble" ;;
	redis)
		prefix=idem-profile-$$:
		CLEANUPS+=("redis-cli -u '$REDIS_URL' --scan --pattern '$prefix*' | xargs -r -n 500 redis-cli -u '$REDIS_URL' del >/dev/null")
		store="$REDIS_URL?key_prefix=$prefix&pool_size=$BENCH_CONCURRENCY"
		;;
	postgres)
		schema=idem_profile_$$
		psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null
		CLEANUPS+=("psql '$PG_URL' -qc 'DROP SCHEMA $schema CASCADE' >/dev/null 2>&1")
		store="$PG_URL&search_path=$schema&pool_max_conns=$BENCH_CONCURRENCY"
		;;
	*) echo "unknown store $name"; exit 2 ;;
	esac
	flags=()
	[ "$name" = postgres ] && flags+=(--migrate)
	start_idemd "$store" "${flags[@]+"${flags[@]}"}" || { echo "  skipped: idemd does not serve $name here"; continue; }
	echo "== $name: Reserve of new keys, ${secs}s, perf at 999 Hz on idemd"
	"$IDEMCTL" --addr "$IDEMD_ADDR" bench --server-pid "$IDEMD_PID" --op reserve --mix new=100 \
		--concurrency "$BENCH_CONCURRENCY" --conns "$BENCH_CONNS" --duration "$((secs + 2))s" -o json >"$BENCH_OUT/profile-$name.json" &
	load=$!
	sleep 1
	perf record -q -F 999 -g -p "$IDEMD_PID" -o "$TMP/perf-$name.data" -- sleep "$secs" >/dev/null 2>&1
	wait "$load"
	summary "$BENCH_OUT/profile-$name.json"
	perf script -i "$TMP/perf-$name.data" -F ip,sym 2>/dev/null >"$TMP/perf-$name.txt"
	python3 - "$TMP/perf-$name.txt" <<'PY' | tee "$BENCH_OUT/profile-$name.txt"
# Each sample is charged to the first frame, from the leaf up, that belongs
# to a component; runtime, kernel and generic library frames (allocation,
# syscalls, net, bufio, stack growth) are charged to the code that caused
# them, so a Redis client's socket writes count for the store. The GC's background
# workers and the scheduler's idle loop have no such caller.
import re, sys, collections
comps = [
    ("store", r"cockroachdb/pebble|idemhq/idem/storage|redis/go-redis|jackc/pgx|jackc/puddle"),
    ("mw", r"grpc-ecosystem/go-grpc-middleware|go\.opentelemetry\.io|prometheus/client_golang|idemhq/idem/server/(observe|auth|limit|idemdext)"),
    # idem.v1's generated encoders and the codec that calls them, before idem's own code
    ("protobuf", r"google\.golang\.org/protobuf|planetscale/vtprotobuf|idemhq/idem/proto/|idemhq/idem/internal/codec"),
    ("idem", r"idemhq/idem"),
    ("grpc", r"google\.golang\.org/grpc|golang\.org/x/net/"),
]
names = {"store": "store (memory maps, pebble, or the Redis/PostgreSQL client and its syscalls)", "idem": "idem's own code (server, validation, conversion)",
         "protobuf": "protobuf encoding", "mw": "interceptors (logging, metrics, tracing, auth, limits)", "grpc": "gRPC + HTTP/2 + net (with their syscalls)",
         "gc": "Go GC background marking", "sched": "Go scheduler, timers, idle", "kernel": "kernel only (interrupts, softirq)", "other": "other"}
count = collections.Counter()
leaf = collections.Counter()
caller = collections.Counter()
frames = []
def flush():
    if not frames:
        return
    syms = frames[:]
    leaf[syms[0]] += 1
    for f in syms:
        if not re.match(r"runtime\.|internal/|\[|[a-z_0-9.]*$", f) or "/" in f:
            caller[f] += 1
            break
    if any(re.search(r"gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge", f) for f in syms):
        count["gc"] += 1
        return
    for f in syms:
        for c, rx in comps:
            if re.search(rx, f):
                count[c] += 1
                return
    if any(f.startswith("runtime.") for f in syms):
        count["sched"] += 1
    elif syms:
        count["kernel"] += 1
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    if not line.strip():
        flush(); frames = []
        continue
    parts = line.split(None, 1)
    if len(parts) == 2:
        frames.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1]))
flush()
total = sum(count.values()) or 1
for k in ["grpc", "protobuf", "mw", "idem", "store", "gc", "sched", "kernel", "other"]:
    if count[k]:
        print(f"  {100*count[k]/total:5.1f}%  {names[k]}")
print(f"  ({total} samples)")
print("  top leaf functions:")
for f, n in leaf.most_common(10):
    print(f"    {100*n/total:5.1f}%  {f[:110]}")
print("  top first non-runtime frames (who caused the time):")
for f, n in caller.most_common(12):
    print(f"    {100*n/total:5.1f}%  {f[:110]}")
PY
	stop_idemd
done
echo "results: $BENCH_OUT"
