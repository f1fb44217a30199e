package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
)

// Options configure a Resolver.
type Options struct {
	// Path is the policy file.
	Path string
	// Limits are the server's limits; zero fields are the defaults.
	Limits server.Limits
	// Store is the server's own store, for patterns that name none. It is
	// not closed by the Resolver. StoreURL is its URL, so a pattern naming
	// the same URL shares it instead of opening it twice.
	Store    storage.Store
	StoreURL string
	// Open are the options stores are opened with.
	Open storage.OpenOptions
	// PingTimeout bounds the ping of each newly opened store (default 5s).
	PingTimeout time.Duration
	Logger      *slog.Logger
	// Instrument, when set, wraps each store the policy opens (idemd uses
	// it for the store metrics); the wrapper's Close must close the store.
	Instrument func(storeURL string, s storage.Store) storage.Store
}

// Resolver is a server.PolicyResolver over a policy file. Install its
// interceptors on the gRPC server: they are what tells a reload when the
// stores it replaced are no longer in use.
type Resolver struct {
	opts Options

	cur atomic.Pointer[generation]

	reloadMu sync.Mutex // one reload at a time; guards lastRetire, closed
	// lastRetire is closed when every generation before the current one
	// has drained and released its stores.
	lastRetire <-chan struct{}
	closed     bool

	mu   sync.Mutex // guards open; held while opening or closing stores
	open map[string]*storeRef
}

var _ server.PolicyResolver = (*Resolver)(nil)

type storeRef struct {
	url   string
	store storage.Store
	refs  int  // generations holding it
	owned bool // false for the server's own store
}

type route struct {
	store storage.Store // nil: the server's store
	pol   server.Policy
}

type prefixRoute struct {
	prefix string
	route
}

// generation is one loaded policy file. Calls pin the generation current
// when they start; its stores are released once it is replaced and every
// call pinned to it (or to an older one) has finished.
type generation struct {
	exact    map[string]route
	prefixes []prefixRoute // longest first
	def      route
	refs     []*storeRef
	rules    int

	inflight atomic.Int64
	retired  atomic.Bool
	wake     chan struct{}
}

// Load reads, validates and applies the policy file: every store is
// opened and pinged. Errors name the file and line.
func Load(ctx context.Context, o Options) (*Resolver, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 5 * time.Second
	}
	lim, err := o.Limits.WithDefaults()
	if err != nil {
		return nil, err
	}
	o.Limits = lim
	if o.Open.Logger == nil {
		o.Open.Logger = o.Logger
	}
	r := &Resolver{opts: o, open: map[string]*storeRef{}}
	if o.Store != nil && o.StoreURL != "" {
		// One permanent reference: never closed here.
		r.open[o.StoreURL] = &storeRef{url: o.StoreURL, store: o.Store, refs: 1}
	}
	done := make(chan struct{})
	close(done)
	r.lastRetire = done
	g, err := r.build(ctx)
	if err != nil {
		return nil, err
	}
	r.cur.Store(g)
	r.opts.Logger.Info("policy loaded", "file", r.opts.Path, "patterns", g.rules, "stores", len(g.refs))
	return r, nil
}

// Resolve implements server.PolicyResolver.
func (r *Resolver) Resolve(_, namespace string) (storage.Store, server.Policy) {
	g := r.cur.Load()
	if rt, ok := g.exact[namespace]; ok {
		return rt.store, rt.pol
	}
	for _, p := range g.prefixes {
		if strings.HasPrefix(namespace, p.prefix) {
			return p.store, p.pol
		}
	}
	return g.def.store, g.def.pol
}

// Stores lists the current policy's stores, for Stats over all namespaces.
func (r *Resolver) Stores() []storage.Store {
	g := r.cur.Load()
	out := make([]storage.Store, 0, len(g.refs))
	for _, ref := range g.refs {
		out = append(out, ref.store)
	}
	return out
}

// Reload reads the file again and swaps the new policy in. On any error
// the old policy keeps serving and the error is logged and returned.
func (r *Resolver) Reload(ctx context.Context) error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	if r.closed {
		return errors.New("idem: policy resolver is closed")
	}
	g, err := r.build(ctx)
	if err != nil {
		r.opts.Logger.Error("policy reload failed; keeping the old policy", "file", r.opts.Path, "err", err)
		return err
	}
	old := r.cur.Swap(g)
	r.retire(old)
	r.opts.Logger.Info("policy reloaded", "file", r.opts.Path, "patterns", g.rules, "stores", len(g.refs))
	return nil
}

// Close releases every store once the calls using them have finished
// (wait for it, or until ctx ends). Resolve keeps answering the last
// policy, whose stores are then closed.
func (r *Resolver) Close(ctx context.Context) error {
	r.reloadMu.Lock()
	if r.closed {
		r.reloadMu.Unlock()
		return nil
	}
	r.closed = true
	r.retire(r.cur.Load())
	done := r.lastRetire
	r.reloadMu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("idem: policy stores still in use at shutdown: %w", ctx.Err())
	}
}

// retire releases g's stores in the background once g and every older
// generation have drained. Called with reloadMu held, after g stopped
// being current (or at Close).
func (r *Resolver) retire(g *generation) {
	g.retired.Store(true)
	prev := r.lastRetire
	done := make(chan struct{})
	r.lastRetire = done
	go func() {
		defer close(done)
		<-prev
		for g.inflight.Load() != 0 {
			<-g.wake
		}
		r.release(g.refs)
	}()
}

// pin counts a call against the current generation. The re-check makes
// sure a generation already being drained never gains a call.
func (r *Resolver) pin() *generation {
	for {
		g := r.cur.Load()
		g.inflight.Add(1)
		if r.cur.Load() == g {
			return g
		}
		r.unpin(g)
	}
}

func (r *Resolver) unpin(g *generation) {
	if g.inflight.Add(-1) == 0 && g.retired.Load() {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

// UnaryServerInterceptor counts calls so replaced stores close only after
// the calls that may hold them.
func (r *Resolver) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		g := r.pin()
		defer r.unpin(g)
		return h(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor's twin.
func (r *Resolver) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		g := r.pin()
		defer r.unpin(g)
		return h(srv, ss)
	}
}

// build parses the file and opens its stores, reusing open ones. On error
// nothing changes: the references it took are given back.
func (r *Resolver) build(ctx context.Context) (*generation, error) {
	f, err := ReadFile(r.opts.Path, r.opts.Limits)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Each new URL is opened once, all of them together: a SQL store
	// retries its connection for up to connect_retry, and patterns naming
	// the same unreachable store must not each wait that long in turn.
	type opening struct {
		rule Rule
		st   storage.Store
		err  error
	}
	var openings []*opening
	seen := map[string]bool{}
	for _, rule := range f.Rules {
		if rule.Store == "" || seen[rule.Store] {
			continue
		}
		seen[rule.Store] = true
		if _, ok := r.open[rule.Store]; !ok {
			openings = append(openings, &opening{rule: rule})
		}
	}
	var owg sync.WaitGroup
	for _, o := range openings {
		owg.Add(1)
		go func() {
			defer owg.Done()
			o.st, o.err = storage.Open(ctx, o.rule.Store, r.opts.Open)
		}()
	}
	owg.Wait()
	opened := map[string]*opening{}
	for _, o := range openings {
		opened[o.rule.Store] = o
	}
	byURL := map[string]*storeRef{}
	var refs []*storeRef
	var fresh []*storeRef
	var problems []Problem
	for _, rule := range f.Rules {
		if rule.Store == "" {
			continue
		}
		if _, ok := byURL[rule.Store]; ok {
			continue
		}
		ref, ok := r.open[rule.Store]
		if !ok {
			o := opened[rule.Store]
			if o.err != nil {
				if o.rule.Line == rule.Line { // reported once, at its first pattern
					problems = append(problems, Problem{Line: rule.Line, Msg: fmt.Sprintf("%q: cannot open store %s: %s", rule.Pattern, storage.Redacted(rule.Store), strings.TrimPrefix(o.err.Error(), "idem: "))})
				}
				continue
			}
			st := o.st
			if r.opts.Instrument != nil {
				st = r.opts.Instrument(rule.Store, st)
			}
			ref = &storeRef{url: rule.Store, store: st, owned: true}
			fresh = append(fresh, ref)
		}
		byURL[rule.Store] = ref
		refs = append(refs, ref)
	}
	// Ping the new stores together, so one slow store costs one timeout.
	errs := make([]error, len(fresh))
	var wg sync.WaitGroup
	for i, ref := range fresh {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, r.opts.PingTimeout)
			defer cancel()
			errs[i] = ref.store.Ping(pctx)
		}()
	}
	wg.Wait()
	for i, ref := range fresh {
		if errs[i] != nil {
			line, pattern := 0, ""
			for _, rule := range f.Rules {
				if rule.Store == ref.url {
					line, pattern = rule.Line, rule.Pattern
					break
				}
			}
			problems = append(problems, Problem{Line: line, Msg: fmt.Sprintf("%q: store %s does not answer: %s", pattern, storage.Redacted(ref.url), strings.TrimPrefix(errs[i].Error(), "idem: "))})
		}
	}
	if len(problems) > 0 {
		for _, ref := range fresh {
			_ = ref.store.Close()
		}
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
		return nil, &FileError{Path: f.Path, Problems: problems}
	}
	for _, ref := range fresh {
		r.open[ref.url] = ref
	}
	for _, ref := range refs {
		ref.refs++
	}

	g := &generation{exact: map[string]route{}, refs: refs, rules: len(f.Rules), wake: make(chan struct{}, 1)}
	g.def = route{pol: r.opts.Limits.DefaultPolicy()}
	for _, rule := range f.Rules {
		rt := route{pol: rule.Policy}
		if rule.Store != "" {
			rt.store = byURL[rule.Store].store
		}
		switch rule.Kind {
		case Exact:
			g.exact[rule.Match] = rt
		case Prefix:
			g.prefixes = append(g.prefixes, prefixRoute{prefix: rule.Match, route: rt})
		case Default:
			g.def = rt
		}
	}
	sort.SliceStable(g.prefixes, func(i, j int) bool { return len(g.prefixes[i].prefix) > len(g.prefixes[j].prefix) })
	return g, nil
}

// release drops one generation's references, closing stores no generation holds.
func (r *Resolver) release(refs []*storeRef) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ref := range refs {
		ref.refs--
		if ref.refs > 0 || !ref.owned {
			continue
		}
		delete(r.open, ref.url)
		if err := ref.store.Close(); err != nil {
			r.opts.Logger.Error("closing a store the policy no longer names failed", "store", storage.Redacted(ref.url), "err", err)
		} else {
			r.opts.Logger.Info("policy store closed", "store", storage.Redacted(ref.url))
		}
	}
}
