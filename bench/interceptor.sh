#!/usr/bin/env bash
# The server interceptor's replay path vs the same call without the
# interceptor (client.BenchmarkServerInterceptor, over bufconn): rate of
# replays answered without running the handler ÷ rate of plain calls.
#
#   bench/interceptor.sh        # BENCH_INTERCEPTOR_TIME=2000x
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(cd "$ROOT" && timeout 900 go test ./client -run '^$' -bench ServerInterceptor -benchtime "${BENCH_INTERCEPTOR_TIME:-2000x}")
echo "$out" | grep -E '^Benchmark'
echo "$out" | python3 -c '
import re, sys
ns = {}
for line in sys.stdin:
    m = re.match(r"BenchmarkServerInterceptor/(\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op", line)
    if m:
        ns[m.group(1)] = float(m.group(3))
base = ns.get("baseline")
for k, v in ns.items():
    if k.startswith("replay/") and base:
        print(f"{k} rate / no-interceptor rate: {base/v:.2f}x")
'
