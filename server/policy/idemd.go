package policy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/idemd"
	"github.com/idemhq/idem/server/observe"
	"github.com/idemhq/idem/storage"
)

func init() {
	idemd.RegisterExtension(&extension{})
}

// extension adds --policy to idemd and reloads the file on SIGHUP.
type extension struct {
	path        string
	pingTimeout time.Duration
}

func (e *extension) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&e.path, "policy", "", "per-namespace policy file (YAML, or TOML if named *.toml): namespace patterns to stores and limits; reloaded on SIGHUP")
	fs.DurationVar(&e.pingTimeout, "policy-ping-timeout", 5*time.Second, "how long each store of the policy file may take to answer its first ping")
}

// StoreURLs implements idemd.StoreNamer: the stores the policy file
// names, which idemd migrate and --migrate migrate along with --store.
func (e *extension) StoreURLs(cfg idemd.Config) ([]string, error) {
	if e.path == "" {
		return nil, nil
	}
	lim, err := cfg.Limits()
	if err != nil {
		return nil, err
	}
	f, err := ReadFile(e.path, lim)
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, r := range f.Rules {
		if r.Store != "" {
			urls = append(urls, r.Store)
		}
	}
	return urls, nil
}

func (e *extension) Setup(ctx context.Context, s *idemd.Setup) error {
	if e.path == "" {
		return nil
	}
	// Load would quietly take its 5s default for these instead.
	if e.pingTimeout <= 0 {
		return fmt.Errorf("idem: --policy-ping-timeout %v must be positive", e.pingTimeout)
	}
	if len(s.Config.Policies) > 0 {
		return errors.New("idem: --policy and --namespace-policy cannot be combined; move the namespace policies into the policy file")
	}
	lim, err := s.Config.Limits()
	if err != nil {
		return err
	}
	o := Options{
		Path:        e.path,
		Limits:      lim,
		Store:       s.Store,
		StoreURL:    s.Config.Store,
		PingTimeout: e.pingTimeout,
		Logger:      s.Logger,
	}
	if s.Observe != nil {
		// The policy's stores get the same store metrics as --store, each
		// its own series: sharing one per kind, a PostgreSQL store that
		// fails is half of "postgres" beside a second one, and never
		// pages. --store keeps its kind as label, so one-store setups'
		// dashboards stay as they are.
		m := s.Observe.Metrics
		labels := observe.NewStoreLabels()
		o.Instrument = func(u string, st storage.Store) storage.Store {
			return observe.InstrumentStore(labels.Label(idemd.StoreScheme(u), u), st, m)
		}
	}
	r, err := Load(ctx, o)
	if err != nil {
		return err
	}
	s.ServiceOptions = append(s.ServiceOptions, server.WithPolicyResolver(r))
	s.UnaryInterceptors = append(s.UnaryInterceptors, r.UnaryServerInterceptor())
	s.StreamInterceptors = append(s.StreamInterceptors, r.StreamServerInterceptor())

	// SIGHUP is caught only once serving starts, so a failed start leaves
	// no goroutine behind.
	stop := make(chan struct{})
	stopped := make(chan struct{})
	started := false // Started and Shutdown run on Serve's goroutine
	// A reload in flight at shutdown is abandoned: opening a store that does
	// not answer may take the reload's whole minute, past the shutdown's
	// deadline, and holds the lock Close needs.
	reloads, abandon := context.WithCancel(context.Background())
	s.Started = append(s.Started, func(*server.Service, *grpc.Server) {
		started = true
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			defer close(stopped)
			defer signal.Stop(hup)
			for {
				select {
				case <-hup:
					rctx, cancel := context.WithTimeout(reloads, time.Minute)
					_ = r.Reload(rctx) // logged by Reload
					cancel()
				case <-stop:
					return
				}
			}
		}()
	})
	s.Shutdown = append(s.Shutdown, func(ctx context.Context) error {
		abandon()
		if started {
			close(stop)
		}
		// Close does not wait for a reload past ctx: it cancels it, closes
		// the stores the policy holds when ctx ends even if calls or the
		// reload still run, and a store the reload is still opening as
		// soon as its open returns.
		err := r.Close(ctx)
		if started {
			select {
			case <-stopped:
			case <-ctx.Done():
				err = errors.Join(err, fmt.Errorf("idem: policy reload still running at shutdown: %w", ctx.Err()))
			}
		}
		return err
	})
	return nil
}
