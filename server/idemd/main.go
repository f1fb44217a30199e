package idemd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
)

// Command is an idemd subcommand (idemd serve, idemd migrate, …). Run gets
// the arguments after the command's name and returns the exit code.
type Command struct {
	Summary string
	Run     func(ctx context.Context, args []string, env func(string) (string, bool), stderr io.Writer) int
}

var (
	cmdMu    sync.Mutex
	commands = map[string]Command{}
)

// RegisterCommand adds a subcommand. Packages call it from init; serve is built in.
func RegisterCommand(name string, c Command) {
	cmdMu.Lock()
	defer cmdMu.Unlock()
	commands[name] = c
}

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // failure while serving
	ExitUsage = 2 // bad flag, bad environment, store or address unusable at start
)

// Main runs idemd with args (without the program name): "[serve] [flags]"
// or "COMMAND [flags]". env looks up environment variables. Errors are one
// line "idemd: …" on stderr; the exit code is returned.
func Main(ctx context.Context, args []string, env func(string) (string, bool), stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "serve" {
		return serveMain(ctx, args, env, stderr)
	}
	cmdMu.Lock()
	c, ok := commands[name]
	cmdMu.Unlock()
	if !ok {
		fail(stderr, fmt.Errorf("unknown command %q (have %s)", name, strings.Join(commandNames(), ", ")))
		return ExitUsage
	}
	return c.Run(ctx, args, env, stderr)
}

func commandNames() []string {
	cmdMu.Lock()
	defer cmdMu.Unlock()
	names := []string{"serve"}
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func serveMain(ctx context.Context, args []string, env func(string) (string, bool), stderr io.Writer) int {
	fs := flag.NewFlagSet("idemd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := DefaultConfig()
	RegisterFlags(fs, &cfg)
	exts := registeredExtensions()
	for _, e := range exts {
		e.RegisterFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintf(stderr, "Usage: idemd [serve] [flags]   (commands: %s)\nEvery flag may also be set as IDEM_<FLAG>, e.g. IDEM_STORE.\n", strings.Join(commandNames(), ", "))
			fs.PrintDefaults()
			return ExitOK
		}
		fail(stderr, fmt.Errorf("%v (see idemd -h)", err))
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fail(stderr, fmt.Errorf("unexpected argument %q (see idemd -h)", fs.Arg(0)))
		return ExitUsage
	}
	if err := ApplyEnv(fs, env); err != nil {
		fail(stderr, err)
		return ExitUsage
	}
	gcSet := false
	fs.Visit(func(f *flag.Flag) { gcSet = gcSet || f.Name == "gc-percent" })
	if _, ok := env(EnvName("gc-percent")); ok {
		gcSet = true
	}
	if _, ok := env("GOGC"); gcSet || !ok {
		if cfg.GCPercent > 0 {
			debug.SetGCPercent(cfg.GCPercent)
		}
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if err := Serve(ctx, cfg, log, exts...); err != nil {
		fail(stderr, err)
		var se *startError
		if errors.As(err, &se) {
			return ExitUsage
		}
		return ExitError
	}
	return ExitOK
}

// fail prints err as one line.
func fail(w io.Writer, err error) {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(trimIdem(err), "\n", "; ")), " ")
	fmt.Fprintf(w, "idemd: %s\n", msg)
}

// trimIdem drops the "idem: " prefix of idem's errors, which "idemd: " replaces.
func trimIdem(err error) string {
	return strings.TrimPrefix(err.Error(), "idem: ")
}
