package cockroach

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemhq/idem/storage"
)

// URL query parameters read by idem and removed before the URL reaches pgx.
// Every other parameter is pgx's or libpq's own (pool_max_conns,
// pool_min_conns, connect_timeout, sslmode, search_path, application_name,
// default_query_exec_mode, …).
const (
	// ParamStatementTimeout bounds every statement on the server side, a Go
	// duration ("5s"); "0" disables it. Default 10s. Migrate does not apply
	// it: migrations may take long and are bounded by Migrate's context.
	ParamStatementTimeout = "statement_timeout"
	// ParamConnectRetry is how long opening the store keeps retrying a
	// database that does not answer yet, a Go duration; "0" tries once.
	// Default 30s.
	ParamConnectRetry = "connect_retry"
	// ParamSweepInterval is how often the PostgreSQL sweeper deletes expired
	// rows, a Go duration; "0" disables it. Default 1m. CockroachDB uses
	// row-level TTL instead and ignores it.
	ParamSweepInterval = "sweep_interval"
	// ParamSweepBatch is the most rows one sweeper statement deletes.
	// Default 1000.
	ParamSweepBatch = "sweep_batch"
	// ParamCoalesce is how many batches of concurrent Reserves (and, apart,
	// of Completes) may be in flight at once; calls beyond them wait for
	// the next batch and share its statement. "0" sends every call on its
	// own. Default 1.
	ParamCoalesce = "coalesce"
	// ParamMultiRegion ("true") makes Migrate apply the CockroachDB
	// multi-region layout (REGIONAL BY ROW, home region from the tenant name).
	ParamMultiRegion = "multi_region"
)

const (
	defaultStatementTimeout = 10 * time.Second
	defaultConnectRetry     = 30 * time.Second
	defaultSweepInterval    = time.Minute
	defaultSweepBatch       = 1000
	defaultCoalesce         = 1
	// coalesceMax bounds a coalesced batch, so one statement stays short.
	coalesceMax = 256
	// defaultPoolMaxConns replaces pgx's max(4, NumCPU), which queues a
	// busy idemd behind a handful of connections. 32 leaves room for three
	// replicas under PostgreSQL's usual max_connections of 100.
	defaultPoolMaxConns = 32
)

type config struct {
	pool          *pgxpool.Config
	connectRetry  time.Duration
	sweepInterval time.Duration
	sweepBatch    int
	coalesce      int
	multiRegion   bool
	// where names the database for errors and logs: host:port/database,
	// never the password.
	where string
}

func parseConfig(u *url.URL) (*config, error) {
	c := &config{
		connectRetry:  defaultConnectRetry,
		sweepInterval: defaultSweepInterval,
		sweepBatch:    defaultSweepBatch,
		coalesce:      defaultCoalesce,
	}
	// Open and Migrate took u from storage.ParseURL, which refuses
	// repeated parameters.
	stmtTimeout := defaultStatementTimeout
	q := u.Query()
	dur := func(name string, dst *time.Duration) error {
		if !q.Has(name) {
			return nil
		}
		v := q.Get(name)
		q.Del(name)
		if v == "0" {
			*dst = 0
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("idem: store URL parameter %s=%q is not a duration like 5s", name, v)
		}
		*dst = d
		return nil
	}
	if err := dur(ParamStatementTimeout, &stmtTimeout); err != nil {
		return nil, err
	}
	if err := dur(ParamConnectRetry, &c.connectRetry); err != nil {
		return nil, err
	}
	if err := dur(ParamSweepInterval, &c.sweepInterval); err != nil {
		return nil, err
	}
	if q.Has(ParamSweepBatch) {
		v := q.Get(ParamSweepBatch)
		q.Del(ParamSweepBatch)
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			return nil, fmt.Errorf("idem: store URL parameter %s=%q is not a count between 1 and 100000", ParamSweepBatch, v)
		}
		c.sweepBatch = n
	}
	if q.Has(ParamCoalesce) {
		v := q.Get(ParamCoalesce)
		q.Del(ParamCoalesce)
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1000 {
			return nil, fmt.Errorf("idem: store URL parameter %s=%q is not a count between 0 (off) and 1000", ParamCoalesce, v)
		}
		c.coalesce = n
	}
	if q.Has(ParamMultiRegion) {
		v := q.Get(ParamMultiRegion)
		q.Del(ParamMultiRegion)
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("idem: store URL parameter %s=%q is not true or false", ParamMultiRegion, v)
		}
		c.multiRegion = b
	}
	pu := *u
	// pgx unescapes query values as paths are unescaped: keep spaces %20,
	// never the + that url.Values.Encode writes.
	pu.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	pc, err := pgxpool.ParseConfig(pu.String())
	if err != nil {
		// pgx's parse errors can quote the connection string; keep only
		// what cannot hold a password.
		return nil, fmt.Errorf("idem: store URL %s is not a valid PostgreSQL connection URL", storage.Redacted(u.String()))
	}
	if !q.Has("pool_max_conns") {
		pc.MaxConns = defaultPoolMaxConns
	}
	if stmtTimeout > 0 {
		// The server takes whole milliseconds in an int4, and reads 0 as
		// "no timeout": round up, and refuse what it would refuse at every
		// login.
		ms := (stmtTimeout + time.Millisecond - 1) / time.Millisecond
		if ms > math.MaxInt32 {
			return nil, fmt.Errorf("idem: store URL parameter %s=%v is longer than the server's limit of %v", ParamStatementTimeout, stmtTimeout, math.MaxInt32*time.Millisecond)
		}
		pc.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(int64(ms), 10)
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "idemd"
	}
	c.pool = pc
	c.where = net.JoinHostPort(pc.ConnConfig.Host, strconv.Itoa(int(pc.ConnConfig.Port))) + "/" + pc.ConnConfig.Database
	return c, nil
}
