package harness

import (
	"fmt"
	"os"
	"path/filepath"
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
