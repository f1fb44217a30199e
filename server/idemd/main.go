package idemd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
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
	ExitError = 1 // failure while serving; idemd migrate stopped by a signal
	ExitUsage = 2 // bad flag, bad environment, store or address unusable at start
)

// environ lists the process's environment, for UnknownEnv.
var environ = os.Environ

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

// parseFlags parses args and the environment into a Config with the flags
// of every registered extension, as serve and the other commands share
// them. ok false means exit with code.
func parseFlags(cmd string, args []string, env func(string) (string, bool), stderr io.Writer) (cfg Config, exts []Extension, code int, ok bool) {
	fs := flag.NewFlagSet("idemd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg = DefaultConfig()
	RegisterFlags(fs, &cfg)
	exts = registeredExtensions()
	for _, e := range exts {
		e.RegisterFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintf(stderr, "Usage: idemd %s [flags]   (commands: %s)\nEvery flag may also be set as IDEM_<FLAG>, e.g. IDEM_STORE.\n", cmd, strings.Join(commandNames(), ", "))
			fs.PrintDefaults()
			return cfg, nil, ExitOK, false
		}
		fail(stderr, fmt.Errorf("%v (see idemd -h)", err))
		return cfg, nil, ExitUsage, false
	}
	if fs.NArg() > 0 {
		fail(stderr, fmt.Errorf("unexpected argument %q (see idemd -h)", fs.Arg(0)))
		return cfg, nil, ExitUsage, false
	}
	if err := ApplyEnv(fs, env); err != nil {
		fail(stderr, err)
		return cfg, nil, ExitUsage, false
	}
	cfg.unknownEnv = UnknownEnv(fs, environ())
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
	return cfg, exts, ExitOK, true
}

func serveMain(ctx context.Context, args []string, env func(string) (string, bool), stderr io.Writer) int {
	cfg, exts, code, ok := parseFlags("[serve]", args, env, stderr)
	if !ok {
		return code
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if err := Serve(ctx, cfg, log, exts...); err != nil {
		var se *startError
		if !errors.As(err, &se) {
			fail(stderr, err)
			return ExitError
		}
		// A SIGTERM while a store still connects is a stop as asked, like
		// one after serving, not a configuration to fix.
		if ctx.Err() != nil {
			fail(stderr, fmt.Errorf("stopped before serving, by a signal (%s)", trimIdem(err)))
			return ExitOK
		}
		fail(stderr, err)
		return ExitUsage
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
