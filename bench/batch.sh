#!/usr/bin/env bash
# HandleBatch vs one-by-one Handle (client/consumer): 500 new messages per
# op through BatchReserve+BatchComplete vs a Reserve+Complete each, on an
# in-process Pebble idem. Ratio: batch msgs/s ÷ one-by-one msgs/s.
#
#   bench/batch.sh              # BENCH_BATCH_TIME=20x
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(cd "$ROOT" && timeout 900 go test -run '^$' -bench '^BenchmarkHandle(Batch)?$' -benchtime "${BENCH_BATCH_TIME:-20x}" ./client/consumer/)
echo "$out" | grep -E '^Benchmark'
one=$(echo "$out" | awk '/^BenchmarkHandle-|^BenchmarkHandle / {for (i=1;i<=NF;i++) if ($(i+1)=="msgs/s") print $i}')
batch=$(echo "$out" | awk '/^BenchmarkHandleBatch/ {for (i=1;i<=NF;i++) if ($(i+1)=="msgs/s") print $i}')
echo "HandleBatch / Handle: $(python3 -c "print(f'{$batch/$one:.1f}x')")"
