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

	reloadMu sync.Mutex // one reload at a time

	// mu guards the fields below. It is never held while a store opens,
	// answers a ping or closes, nor while waiting for calls, so Close
	// never waits on a reload that cannot finish.
	mu   sync.Mutex
	open map[string]*storeRef
	// owned are the stores the Resolver opened and has not closed: those
	// in open, and those a running reload opened but has not committed.
	owned map[*storeRef]struct{}
	// lastRetire is closed when every generation before the current one
	// has drained and released its stores.
	lastRetire <-chan struct{}
	// closed is set by Close: no generation is swapped in any more, and a
	// store a reload opens afterwards is closed at once.
	closed bool
	// cancelReload cancels the running reload; reloading is closed when it
	// has returned. Both nil when no reload runs.
	cancelReload context.CancelFunc
	reloading    chan struct{}
}

var _ server.PolicyResolver = (*Resolver)(nil)

type storeRef struct {
	url   string
	store storage.Store
	refs  int  // generations (and the running build) holding it
	owned bool // false for the server's own store
	shut  bool // closed, or being closed; guarded by Resolver.mu
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
	r := &Resolver{opts: o, open: map[string]*storeRef{}, owned: map[*storeRef]struct{}{}}
	if o.Store != nil && o.StoreURL != "" {
		// One permanent reference: never closed here.
		r.open[o.StoreURL] = &storeRef{url: o.StoreURL, store: o.Store, refs: 1}
	}
	done := make(chan struct{})
	close(done)
	r.lastRetire = done
	g, err := r.build(ctx, func(g *generation) { r.cur.Store(g) })
	if err != nil {
		return nil, err
	}
	r.opts.Logger.Info("policy loaded", "file", r.opts.Path, "patterns", g.rules, "stores", len(g.refs))
	return r, nil
}

// Resolve implements server.PolicyResolver.
func (r *Resolver) Resolve(_, namespace string) (storage.Store, server.Policy) {
	rt := r.cur.Load().resolve(namespace)
	return rt.store, rt.pol
}

func (g *generation) resolve(namespace string) route {
	if rt, ok := g.exact[namespace]; ok {
		return rt
	}
	for _, p := range g.prefixes {
		if strings.HasPrefix(namespace, p.prefix) {
			return p.route
		}
	}
	return g.def
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

// Routes returns, from one policy, its stores and the store a namespace
// is routed to (nil: the server's store), so that Stats over all
// namespaces counts each namespace in the store it is routed to only.
func (r *Resolver) Routes() ([]storage.Store, func(tenant, namespace string) storage.Store) {
	g := r.cur.Load()
	out := make([]storage.Store, 0, len(g.refs))
	for _, ref := range g.refs {
		out = append(out, ref.store)
	}
	return out, func(_, namespace string) storage.Store { return g.resolve(namespace).store }
}

// Reload reads the file again and swaps the new policy in. On any error
// the old policy keeps serving and the error is logged and returned.
// Close cancels a running Reload.
func (r *Resolver) Reload(ctx context.Context) error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errClosed
	}
	reloading := make(chan struct{})
	r.cancelReload, r.reloading = cancel, reloading
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.cancelReload, r.reloading = nil, nil
		r.mu.Unlock()
		close(reloading)
	}()
	g, err := r.build(ctx, func(g *generation) {
		old := r.cur.Swap(g)
		r.retire(old)
	})
	if err != nil {
		if errors.Is(err, errClosed) {
			return err
		}
		r.opts.Logger.Error("policy reload failed; keeping the old policy", "file", r.opts.Path, "err", err)
		return err
	}
	r.opts.Logger.Info("policy reloaded", "file", r.opts.Path, "patterns", g.rules, "stores", len(g.refs))
	return nil
}

var errClosed = errors.New("idem: policy resolver is closed")

// Close releases every store once the calls using them have finished, and
// cancels a running reload. When ctx ends first, it closes the stores
// anyway, under the calls still using them (they answer UNAVAILABLE), and
// returns an error; a store a reload is still opening then is closed as
// soon as its open returns. Resolve keeps answering the last policy.
func (r *Resolver) Close(ctx context.Context) error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		if r.cancelReload != nil {
			r.cancelReload()
		}
		r.retire(r.cur.Load())
	}
	done, reloading := r.lastRetire, r.reloading
	r.mu.Unlock()
	var errs []error
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("idem: policy stores still in use at shutdown, closed under their calls: %w", ctx.Err()))
	}
	if reloading != nil {
		select {
		case <-reloading:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("idem: a policy reload was still opening a store at shutdown; it is closed when its open returns: %w", ctx.Err()))
		}
	}
	// Nothing is left when the calls drained and the reload returned.
	r.mu.Lock()
	var rest []*storeRef
	for ref := range r.owned {
		rest = append(rest, ref)
		r.claim(ref)
	}
	r.mu.Unlock()
	r.closeStores(rest, "closing a policy store at shutdown failed")
	return errors.Join(errs...)
}

// retire releases g's stores in the background once g and every older
// generation have drained. Called with mu held, after g stopped being
// current (or at Close).
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

// storeMethods are the calls that resolve stores: idem.v1's. The others
// (health, reflection) are not counted, as a health Watch stream lasts as
// long as its client's connection and would keep every store a reload
// replaces open until then.
const storeMethods = "/idem.v1."

// UnaryServerInterceptor counts calls so replaced stores close only after
// the calls that may hold them.
func (r *Resolver) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, storeMethods) {
			return h(ctx, req)
		}
		g := r.pin()
		defer r.unpin(g)
		return h(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor's twin.
func (r *Resolver) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, storeMethods) {
			return h(srv, ss)
		}
		g := r.pin()
		defer r.unpin(g)
		return h(srv, ss)
	}
}

// build parses the file and opens its stores, reusing open ones, and
// calls commit with the new generation, with mu held, unless Close came
// first. On error nothing changes: the references it took are given back
// and the stores it opened are closed.
func (r *Resolver) build(ctx context.Context, commit func(*generation)) (*generation, error) {
	f, err := ReadFile(r.opts.Path, r.opts.Limits)
	if err != nil {
		return nil, err
	}
	// Hold the open stores the file names, so that a retiring generation
	// does not close one while this build runs without mu.
	type opening struct {
		rule Rule
		ref  *storeRef
		err  error
	}
	var openings []*opening
	held := map[string]*storeRef{}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errClosed
	}
	for _, rule := range f.Rules {
		if rule.Store == "" {
			continue
		}
		if _, ok := held[rule.Store]; ok {
			continue
		}
		if ref, ok := r.open[rule.Store]; ok {
			ref.refs++
			held[rule.Store] = ref
			continue
		}
		held[rule.Store] = nil
		openings = append(openings, &opening{rule: rule})
	}
	r.mu.Unlock()
	var fresh []*storeRef
	fail := func(err error) (*generation, error) {
		r.mu.Lock()
		closing := r.drop(held)
		r.mu.Unlock()
		r.closeStores(closing, "closing a policy store failed")
		return nil, err
	}

	// Each new URL is opened once, all of them together: a SQL store
	// retries its connection for up to connect_retry, and patterns naming
	// the same unreachable store must not each wait that long in turn. A
	// store is owned (Close closes it) as soon as its open returns.
	var owg sync.WaitGroup
	for _, o := range openings {
		owg.Add(1)
		go func() {
			defer owg.Done()
			st, err := storage.Open(ctx, o.rule.Store, r.opts.Open)
			if err != nil {
				o.err = err
				return
			}
			if r.opts.Instrument != nil {
				st = r.opts.Instrument(o.rule.Store, st)
			}
			ref := &storeRef{url: o.rule.Store, store: st, refs: 1, owned: true} // held by this build
			r.mu.Lock()
			closed := r.closed
			if !closed {
				r.owned[ref] = struct{}{}
			}
			r.mu.Unlock()
			if closed {
				_ = st.Close()
				o.err = errClosed
				return
			}
			o.ref = ref
		}()
	}
	owg.Wait()
	var problems []Problem
	closed := false
	for _, o := range openings {
		switch {
		case o.ref != nil:
			fresh = append(fresh, o.ref)
			held[o.rule.Store] = o.ref
		case errors.Is(o.err, errClosed):
			closed = true
		default: // reported once, at its first pattern
			problems = append(problems, Problem{Line: o.rule.Line, Msg: fmt.Sprintf("%q: cannot open store %s: %s", o.rule.Pattern, storage.Redacted(o.rule.Store), strings.TrimPrefix(o.err.Error(), "idem: "))})
		}
	}
	if closed {
		return fail(errClosed)
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
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
		return fail(&FileError{Path: f.Path, Problems: problems})
	}

	var refs []*storeRef
	seen := map[string]bool{}
	for _, rule := range f.Rules {
		if rule.Store != "" && !seen[rule.Store] {
			seen[rule.Store] = true
			refs = append(refs, held[rule.Store])
		}
	}
	g := &generation{exact: map[string]route{}, refs: refs, rules: len(f.Rules), wake: make(chan struct{}, 1)}
	g.def = route{pol: r.opts.Limits.DefaultPolicy()}
	for _, rule := range f.Rules {
		rt := route{pol: rule.Policy}
		if rule.Store != "" {
			rt.store = held[rule.Store].store
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

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fail(errClosed)
	}
	for _, ref := range fresh {
		r.open[ref.url] = ref
	}
	commit(g) // the references held become the generation's
	r.mu.Unlock()
	return g, nil
}

// release drops one generation's references, closing stores no generation holds.
func (r *Resolver) release(refs []*storeRef) {
	r.mu.Lock()
	held := map[string]*storeRef{}
	for _, ref := range refs {
		held[ref.url] = ref
	}
	closing := r.drop(held)
	r.mu.Unlock()
	r.closeStores(closing, "closing a store the policy no longer names failed")
}

// drop gives back one reference to each store in held (nil entries are
// skipped) and claims those no generation holds any more, for the caller
// to close after unlocking mu. Called with mu held.
func (r *Resolver) drop(held map[string]*storeRef) []*storeRef {
	var closing []*storeRef
	for _, ref := range held {
		if ref == nil {
			continue
		}
		ref.refs--
		if ref.refs > 0 || !ref.owned {
			continue
		}
		if r.claim(ref) {
			closing = append(closing, ref)
		}
	}
	return closing
}

// claim marks an owned store as closing and forgets it, and reports
// whether the caller is the one to close it. Called with mu held.
func (r *Resolver) claim(ref *storeRef) bool {
	if ref.shut || !ref.owned {
		return false
	}
	ref.shut = true
	delete(r.owned, ref)
	if r.open[ref.url] == ref {
		delete(r.open, ref.url)
	}
	return true
}

// closeStores closes claimed stores, without mu held.
func (r *Resolver) closeStores(refs []*storeRef, failed string) {
	for _, ref := range refs {
		if err := ref.store.Close(); err != nil {
			r.opts.Logger.Error(failed, "store", storage.Redacted(ref.url), "err", err)
		} else {
			r.opts.Logger.Info("policy store closed", "store", storage.Redacted(ref.url))
		}
	}
}
