#!/usr/bin/env bash
# idem vs its floor: Reserve of new keys with 50 callers against idemd on
# memory, pebble, PostgreSQL and Redis, each right after the same load
# against grpc.health.v1.Health/Check on the same idemd, with idemd's CPU
# per operation from /proc. Prints the ratios the design targets name, and
# on memory and pebble the rate of Reserve+Complete pairs.
#
#   bench/floor.sh              # BENCH_ROUNDS=5 rounds of BENCH_DURATION=4s phases
#   BENCH_OUT=results bench/floor.sh
BENCH_DURATION=${BENCH_DURATION:-4s}
source "$(dirname "$0")/lib.sh"
build
machine
schema=idem_bench_$$
psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null 2>&1 && CLEANUPS+=("psql '$PG_URL' -qc 'DROP SCHEMA $schema CASCADE' >/dev/null 2>&1")
prefix=idem-bench-$$:
CLEANUPS+=("redis-cli -u '$REDIS_URL' --scan --pattern '$prefix*' | xargs -r -n 500 redis-cli -u '$REDIS_URL' del >/dev/null")
declare -A stores=(
	[memory]="memory://"
	[pebble]="pebble://$TMP/pebble"
	[postgres]="$PG_URL&search_path=$schema&pool_max_conns=$BENCH_CONCURRENCY"
	[redis]="$REDIS_URL?key_prefix=$prefix&pool_size=$BENCH_CONCURRENCY"
)
declare -A migrate=([postgres]=--migrate)
for name in memory pebble postgres redis; do
	echo "== $name: Reserve (new keys), floor = Health/Check"
	flags=()
	if [ -n "${migrate[$name]:-}" ] && "$IDEMD" -h 2>&1 | grep -- '-migrate' >/dev/null; then
		flags+=(--migrate)
	fi
	if ! start_idemd "${stores[$name]}" "${flags[@]+"${flags[@]}"}"; then
		echo "  skipped: idemd does not serve this store here"
		continue
	fi
	plot=()
	[ "$name" = memory ] && plot=(--plot "$BENCH_OUT/floor-memory.svg")
	bench "floor-$name" --floor --op reserve --mix new=100 "${plot[@]+"${plot[@]}"}"
	summary "$BENCH_OUT/floor-$name.json"
	if [ "$name" = memory ] || [ "$name" = pebble ]; then
		echo "  Reserve+Complete of new keys (one phase, no floor):"
		bench "pair-$name" --op reserve-complete --mix new=100
		summary "$BENCH_OUT/pair-$name.json"
	fi
	echo "  idemd RSS $(rss_mib "$IDEMD_PID") MiB"
	stop_idemd
done
if [ -f "$BENCH_OUT/floor-memory.json" ] && [ -f "$BENCH_OUT/floor-pebble.json" ]; then
	# Each store's rate is the median of its rounds' Reserve rates.
	m=$(median_idem_rate "$BENCH_OUT/floor-memory.json")
	p=$(median_idem_rate "$BENCH_OUT/floor-pebble.json")
	echo "pebble / memory Reserve throughput (medians of their rounds' rates, $(printf %.0f "$p") / $(printf %.0f "$m") per s): $(python3 -c "print(f'{$p/$m:.2f}x')")"
fi
echo "results: $BENCH_OUT"
