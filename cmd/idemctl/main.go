// Command idemctl operates and measures idem. See package internal/ctl.
//
//	idemctl [--addr 127.0.0.1:50051] [-o json|table] COMMAND [flags] [args]
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/idemhq/idem/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	st, err := os.Stderr.Stat()
	tty := err == nil && st.Mode()&os.ModeCharDevice != 0
	code := ctl.Main(ctx, os.Args[1:], ctl.Env{Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv, StderrIsTTY: tty})
	stop()
	os.Exit(code)
}
