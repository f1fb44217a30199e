#!/usr/bin/env bash
# Reserve latency on Pebble as the store grows: 10k → 1M → 5M stored keys
# (filled with BatchReserve of 1,000), each stage measured with the same
# load (new keys, BENCH_GROWTH_CONCURRENCY callers, BENCH_GROWTH_COUNT
# calls), with idemd's RSS from /proc after each stage.
#
#   bench/growth.sh             # BENCH_GROWTH_STAGES="10000 1000000 5000000"
source "$(dirname "$0")/lib.sh"
build
machine
stages=${BENCH_GROWTH_STAGES:-10000 1000000 5000000}
conc=${BENCH_GROWTH_CONCURRENCY:-8}
count=${BENCH_GROWTH_COUNT:-10000}
start_idemd "pebble://$TMP/pebble"
stored=0
first=
printf '%10s %10s %10s %10s %10s %9s %9s\n' "keys" "fill s" "ops/s" "p50 ms" "p99 ms" "RSS MiB" "disk MiB"
for target in $stages; do
	t0=$(date +%s.%N)
	need=$(( (target - stored) / 1000 ))
	if [ "$need" -gt 0 ]; then
		timeout 1800 "$IDEMCTL" --addr "$IDEMD_ADDR" --timeout 60s bench --namespace growth --op reserve --mix new=100 \
			--batch 1000 --count "$need" --concurrency 4 --conns 2 -o json >"$BENCH_OUT/growth-fill-$target.json"
		stored=$(( stored + need * 1000 ))
	fi
	before=$stored
	fill=$(python3 -c "import time; print(f'{time.time()-$t0:.0f}')")
	# Warm up (connections, caches, goroutine stacks) before measuring, so
	# the first stage is not charged for idemd's cold start.
	"$IDEMCTL" --addr "$IDEMD_ADDR" --timeout 30s bench --namespace growth --op reserve --mix new=100 \
		--concurrency "$conc" --conns 1 --count 2000 -o json >/dev/null
	stored=$(( stored + 2000 ))
	"$IDEMCTL" --addr "$IDEMD_ADDR" --timeout 30s bench --server-pid "$IDEMD_PID" --namespace growth --op reserve --mix new=100 \
		--concurrency "$conc" --conns 1 --count "$count" -o json >"$BENCH_OUT/growth-$target.json"
	stored=$(( stored + count ))
	ops=$(jget "$BENCH_OUT/growth-$target.json" 'round(r["idem"]["ops_per_sec"])')
	p50=$(jget "$BENCH_OUT/growth-$target.json" 'r["idem"]["latency_us"]["p50"]/1000')
	p99=$(jget "$BENCH_OUT/growth-$target.json" 'r["idem"]["latency_us"]["p99"]/1000')
	disk=$(du -sm "$TMP/pebble" | cut -f1)
	printf '%10s %10s %10s %10s %10s %9s %9s\n' "$before" "$fill" "$ops" "$p50" "$p99" "$(rss_mib "$IDEMD_PID")" "$disk"
	[ -z "$first" ] && first=$p50
	last=$p50
done
echo "p50 at the last stage / first stage: $(python3 -c "print(f'{$last/$first:.2f}x')")"
echo "results: $BENCH_OUT"
