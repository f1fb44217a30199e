package harness

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/idemhq/idem/reliability/model"
)

// Check checks ops for linearizability against model.Model within timeout.
// When the history is not linearizable it writes Porcupine's visualization
// to dir/name.html and returns its path.
func Check(ops []porcupine.Operation, timeout time.Duration, dir, name string) (porcupine.CheckResult, string, error) {
	res, info := porcupine.CheckOperationsVerbose(model.Model, ops, timeout)
	if res != porcupine.Illegal {
		return res, "", nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, "", err
	}
	path := filepath.Join(dir, name+".html")
	if err := porcupine.VisualizePath(model.Model, info, path); err != nil {
		return res, "", fmt.Errorf("idem: writing the visualization: %v", err)
	}
	return res, path, nil
}

// Explain describes the shortest key history of ops that is not
// linearizable on its own, one call per line in call order, for a failure
// message; "" when every key's history is linearizable.
func Explain(ops []porcupine.Operation) string {
	var worst []porcupine.Operation
	for _, part := range model.Model.Partition(ops) {
		if worst != nil && len(part) >= len(worst) {
			continue
		}
		if !porcupine.CheckOperations(model.Model, part) {
			worst = part
		}
	}
	if worst == nil {
		return ""
	}
	sorted := slices.Clone(worst)
	slices.SortFunc(sorted, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var b strings.Builder
	for _, op := range sorted {
		ret := "∞"
		if op.Return != model.UnknownReturn {
			ret = strconv.FormatInt(op.Return/1e3, 10)
		}
		fmt.Fprintf(&b, "  client %2d [%d µs, %s µs] %s", op.ClientId, op.Call/1e3, ret, model.Model.DescribeOperation(op.Input, op.Output))
		if m, _ := op.Metadata.(string); m != "" {
			fmt.Fprintf(&b, " (%s)", m)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
