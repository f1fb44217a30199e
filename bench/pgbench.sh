#!/usr/bin/env bash
# idem on PostgreSQL vs pgbench running idem's own two statements: Reserve
# of a new key + its Complete, 50 callers each, in the same run on the same
# database. Ratio: idem pairs/s ÷ pgbench transactions/s (one transaction =
# the same Reserve+Complete pair, as storage/cockroach/testdata/pgbench_pair.sql).
#
#   bench/pgbench.sh            # BENCH_ROUNDS=5, BENCH_DURATION=4s, IDEM_BENCH_POSTGRES_URL
BENCH_DURATION=${BENCH_DURATION:-4s}
source "$(dirname "$0")/lib.sh"
build
machine
sql=$ROOT/storage/cockroach/testdata/pgbench_pair.sql
[ -f "$sql" ] || { echo "skipped: $sql is missing"; exit 0; }
schema=idem_pgbench_$$
psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null
CLEANUPS+=("psql '$PG_URL' -qc 'DROP SCHEMA $schema CASCADE' >/dev/null 2>&1")
# One connection per caller, as pgbench has (pgx defaults to max(4, cores)).
store="$PG_URL&search_path=$schema&pool_max_conns=$BENCH_CONCURRENCY"
flags=()
if "$IDEMD" -h 2>&1 | grep '^Usage:.*migrate' >/dev/null; then
	"$IDEMD" migrate --store "$store" >"$TMP/migrate.log" 2>&1 || { cat "$TMP/migrate.log"; exit 1; }
elif "$IDEMD" -h 2>&1 | grep -- '-migrate' >/dev/null; then
	flags+=(--migrate)
fi
if ! start_idemd "$store" "${flags[@]+"${flags[@]}"}"; then
	echo "skipped: idemd does not serve PostgreSQL here"
	exit 0
fi
secs=${BENCH_DURATION%s}
# Rounds alternate pgbench and idem, so a shared machine's drift hits both;
# the ratio reported is the median of the rounds' ratios.
ratios=()
for round in $(seq 1 "$BENCH_ROUNDS"); do
	PGOPTIONS="-c search_path=$schema" pgbench -n -M prepared -c "$BENCH_CONCURRENCY" -j 2 -T "$secs" -f "$sql" "$PG_URL" >"$BENCH_OUT/pgbench-raw.txt" 2>&1 || {
		cat "$BENCH_OUT/pgbench-raw.txt"
		exit 1
	}
	tps=$(awk '/^tps = / {print $3}' "$BENCH_OUT/pgbench-raw.txt")
	# pgbench_pair.sql completes with a 256-byte body: so does idem.
	bench pgbench-idem --op reserve-complete --mix new=100 --payload 256
	idem=$(jget "$BENCH_OUT/pgbench-idem.json" 'r["idem"]["ops_per_sec"]')
	cpu=$(jget "$BENCH_OUT/pgbench-idem.json" 'r["idem"]["server_cpu"]["cpu_us_per_op"]')
	r=$(python3 -c "print(f'{$idem/$tps:.3f}')")
	ratios+=("$r")
	printf '  round %d: pgbench %.0f pairs/s, idem %.0f pairs/s (idemd %.0f µs CPU per pair) = %.2fx\n' "$round" "$tps" "$idem" "$cpu" "$r"
done
echo "== last round's idem run, $BENCH_CONCURRENCY callers, Reserve+Complete of new keys:"
summary "$BENCH_OUT/pgbench-idem.json"
echo "idem / pgbench pair rate, median of $BENCH_ROUNDS rounds: $(printf '%s\n' "${ratios[@]}" | sort -n | python3 -c "import sys; v=[float(x) for x in sys.stdin]; n=len(v); print(f'{(v[n//2] if n%2 else (v[n//2-1]+v[n//2])/2):.2f}x')")"
echo "results: $BENCH_OUT"
