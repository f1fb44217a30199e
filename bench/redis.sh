#!/usr/bin/env bash
# idem on Redis vs redis-benchmark running the equivalent of a Reserve of a
# new key, SET key val NX PX 30000, 50 clients each, same Redis, same run.
# Ratio: idem Reserve/s ÷ redis-benchmark SETs/s.
#
#   bench/redis.sh              # BENCH_ROUNDS=5, BENCH_DURATION=4s, IDEM_BENCH_REDIS_URL
BENCH_DURATION=${BENCH_DURATION:-4s}
source "$(dirname "$0")/lib.sh"
build
machine
prefix=idem-bench-$$:
CLEANUPS+=("redis-cli -u '$REDIS_URL' --scan --pattern '$prefix*' | xargs -r -n 500 redis-cli -u '$REDIS_URL' del >/dev/null")
# One connection per caller, as redis-benchmark has.
if ! start_idemd "$REDIS_URL?key_prefix=$prefix&pool_size=$BENCH_CONCURRENCY"; then
	echo "skipped: idemd does not serve Redis here"
	exit 0
fi
hostport=${REDIS_URL#redis://}
hostport=${hostport%%/*}
n=${BENCH_REDIS_REQUESTS:-300000}
echo "== redis-benchmark: $BENCH_CONCURRENCY clients, $n × SET key val NX PX 30000"
redis-benchmark -h "${hostport%:*}" -p "${hostport#*:}" -q -c "$BENCH_CONCURRENCY" -n "$n" -r 1000000000 \
	SET "${prefix}rb:__rand_int__" val NX PX 30000 2>&1 | tr '\r' '\n' | grep 'requests per second' | tail -n 1 >"$BENCH_OUT/redis-benchmark.txt"
rps=$(sed -E 's/.*: ([0-9.]+) requests per second.*/\1/' "$BENCH_OUT/redis-benchmark.txt")
echo "  redis-benchmark  $(cat "$BENCH_OUT/redis-benchmark.txt")"
echo "== idem on Redis: Reserve of new keys, $BENCH_CONCURRENCY callers, floor = Health/Check"
redis-cli -u "$REDIS_URL" info commandstats >"$TMP/stats-before"
bench redis-idem --floor --op reserve --mix new=100
redis-cli -u "$REDIS_URL" info commandstats >"$TMP/stats-after"
summary "$BENCH_OUT/redis-idem.json"
# Inside Redis, over the whole run: each new record is one SET inside the
# Reserve script; EVALSHA's time is Redis's own account of the scripts.
python3 - "$TMP/stats-before" "$TMP/stats-after" <<'PY'
import re, sys
def stats(path):
    out = {}
    for line in open(path):
        m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", line)
        if m:
            out[m[1]] = (int(m[2]), int(m[3]))
    return out
a, b = stats(sys.argv[1]), stats(sys.argv[2])
d = {k: (b[k][0] - a.get(k, (0, 0))[0], b[k][1] - a.get(k, (0, 0))[1]) for k in b}
calls, usec = d.get("evalsha", (0, 0))
records = d.get("set", (0, 0))[0]
if calls and records:
    print(f"  inside Redis: {records} records in {calls} EVALSHA calls ({records/calls:.1f} a call), "
          f"{usec/records:.1f} µs of EVALSHA per record (Redis's commandstats)")
PY
idem=$(median_idem_rate "$BENCH_OUT/redis-idem.json")
echo "idem Reserve (median of the rounds' rates, $(printf %.0f "$idem")/s) / redis-benchmark SET NX PX: $(python3 -c "print(f'{$idem/$rps:.2f}x')")"
echo "results: $BENCH_OUT"
