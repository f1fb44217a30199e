package idemd

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"testing"
)

// hookExt registers a Shutdown hook, as an extension that opened stores or
// started goroutines does.
type hookExt struct{ ran *bool }

func (hookExt) RegisterFlags(*flag.FlagSet) {}
func (h hookExt) Setup(_ context.Context, s *Setup) error {
	s.Shutdown = append(s.Shutdown, func(context.Context) error { *h.ran = true; return nil })
	return nil
}

type failExt struct{}

func (failExt) RegisterFlags(*flag.FlagSet)         {}
func (failExt) Setup(context.Context, *Setup) error { return errors.New("idem: cannot start") }

// A start that fails after an extension set itself up still runs that
// extension's Shutdown hooks: a program embedding idemd lives on after
// Serve returns, and the extension's stores and goroutines must not.
func TestFailedStartRunsShutdownHooks(t *testing.T) {
	ran := false
	err := Serve(context.Background(), memoryConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), hookExt{&ran}, failExt{})
	var se *startError
	if !errors.As(err, &se) {
		t.Fatalf("Serve() = %v, want a start error", err)
	}
	if !ran {
		t.Error("Serve() returned a start error without running the Shutdown hooks registered before it")
	}
}
