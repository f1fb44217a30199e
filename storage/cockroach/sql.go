package cockroach

import "strings"

// Every statement reads the clock once, as n.t: the database's now() plus an
// offset that is always 0 in production and moves only in the conformance
// tests' fake clock. The statements are the same text on PostgreSQL and
// CockroachDB.
//
// Mutations are single statements of the form
//
//	WITH n, m AS (INSERT … ON CONFLICT DO UPDATE … WHERE rule | UPDATE … WHERE rule RETURNING …)
//	SELECT true, m.* UNION ALL SELECT false, current row WHERE NOT EXISTS (m)
//
// The rule in the WHERE clause is evaluated on the newest committed row
// (PostgreSQL re-checks it after waiting for a concurrent writer), but the
// fallback SELECT reads the statement's snapshot, which can be older: it may
// return no row (the row was inserted after the snapshot) or a row
// the rule would have changed. Go re-decides the fallback row with the
// functions of storage/transition.go and runs the statement again whenever
// that decision says "write": the snapshot was stale.

const nowCTE = `n AS (SELECT now() + $1::BIGINT * INTERVAL '1 microsecond' AS t)`

// recCols are the stored columns after the ID, in scan order.
var recCols = []string{"fingerprint", "state", "token", "attempts", "result", "checkpoint", "created_at", "lease_expires_at", "completed_at", "expires_at"}

func cols(alias string, withID bool) string {
	var b strings.Builder
	if withID {
		b.WriteString(alias + ".tenant, " + alias + ".namespace, " + alias + ".idem_key, ")
	}
	for i, c := range recCols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(alias + "." + c)
	}
	return b.String()
}

// The reserve rule, with excluded.created_at standing for n.t (the insert
// sets created_at to it): an expired row is replaced by a fresh one; an equal
// fingerprint on RELEASED or on IN_PROGRESS with a lapsed lease is taken over.
const (
	expired       = `r.expires_at <= excluded.created_at`
	reserveRule   = expired + ` OR (r.fingerprint = excluded.fingerprint AND (r.state = 3 OR (r.state = 1 AND r.lease_expires_at <= excluded.created_at)))`
	reserveUpdate = `
	fingerprint = CASE WHEN ` + expired + ` THEN excluded.fingerprint ELSE r.fingerprint END,
	state = 1,
	token = CASE WHEN ` + expired + ` THEN 1 ELSE r.token + 1 END,
	attempts = CASE WHEN ` + expired + ` THEN 1 ELSE r.attempts + 1 END,
	result = NULL,
	checkpoint = CASE WHEN ` + expired + ` THEN NULL ELSE r.checkpoint END,
	created_at = CASE WHEN ` + expired + ` THEN excluded.created_at ELSE r.created_at END,
	lease_expires_at = excluded.lease_expires_at,
	completed_at = NULL,
	expires_at = CASE WHEN ` + expired + ` THEN excluded.expires_at ELSE greatest(r.expires_at, excluded.expires_at) END`
	insertCols = `(tenant, namespace, idem_key, fingerprint, state, token, attempts, created_at, lease_expires_at, expires_at)`
	us         = `::BIGINT * INTERVAL '1 microsecond'`
)

const pk = `r.tenant = $2::TEXT AND r.namespace = $3::TEXT AND r.idem_key = $4::TEXT`

// sqlReserve: $1 offset, $2-$4 ID, $5 fingerprint, $6 lease µs, $7 hold µs.
var sqlReserve = `WITH ` + nowCTE + `,
m AS (
	INSERT INTO idem_records AS r ` + insertCols + `
	SELECT $2::TEXT, $3::TEXT, $4::TEXT, $5::BYTEA, 1, 1, 1, n.t, n.t + $6` + us + `, n.t + $7` + us + ` FROM n
	ON CONFLICT (tenant, namespace, idem_key) DO UPDATE SET` + reserveUpdate + `
	WHERE ` + reserveRule + `
	RETURNING ` + cols("r", false) + `
)
SELECT true, ` + cols("m", false) + `, n.t FROM m, n
UNION ALL
SELECT false, ` + cols("r", false) + `, n.t FROM idem_records AS r, n WHERE ` + pk + ` AND NOT EXISTS (SELECT 1 FROM m)`

// update builds a single-record mutation: set and rule may use n.t and
// parameters from $5 on.
func update(set, rule string) string {
	return `WITH ` + nowCTE + `,
m AS (
	UPDATE idem_records AS r SET ` + set + ` FROM n
	WHERE ` + pk + ` AND r.expires_at > n.t AND ` + rule + `
	RETURNING ` + cols("r", false) + `
)
SELECT true, ` + cols("m", false) + `, n.t FROM m, n
UNION ALL
SELECT false, ` + cols("r", false) + `, n.t FROM idem_records AS r, n WHERE ` + pk + ` AND NOT EXISTS (SELECT 1 FROM m)`
}

var (
	// $5 token, $6 result, $7 retention µs.
	sqlComplete = update(`state = 2, result = $6::BYTEA, completed_at = n.t, expires_at = n.t + $7`+us, `r.state = 1 AND r.token = $5::BIGINT`)
	// $5 token.
	sqlRelease = update(`state = 3`, `r.state = 1 AND r.token = $5::BIGINT`)
	// $5 token, $6 ttl µs.
	sqlExtend = update(`lease_expires_at = n.t + $6`+us+`, expires_at = greatest(r.expires_at, n.t + $6`+us+`)`, `r.state = 1 AND r.token = $5::BIGINT`)
	// $5 token, $6 checkpoint.
	sqlCheckpoint = update(`checkpoint = $6::BYTEA`, `r.state = 1 AND r.token = $5::BIGINT`)
	// ForceRelease is the operator's: any token.
	sqlForceRelease = update(`state = 3`, `r.state = 1`)
)

var sqlLookup = `WITH ` + nowCTE + `
SELECT true, ` + cols("r", false) + `, n.t FROM idem_records AS r, n WHERE ` + pk + ` AND r.expires_at > n.t`

var sqlDelete = `WITH ` + nowCTE + `,
m AS (DELETE FROM idem_records AS r WHERE ` + pk + ` RETURNING ` + cols("r", false) + `)
SELECT true, ` + cols("m", false) + `, n.t FROM m, n`

// BatchReserve passes one array per column and unnests them in one
// statement: one round trip for up to 1,000 items, one plan however many
// there are. INSERT … ON CONFLICT probes the primary key once per item by
// construction, and the fallback reads each item's row through a LATERAL
// subquery with LIMIT 1, which PostgreSQL cannot flatten into a join, so no
// table statistics can turn either into a scan of the table.
//
// sqlBatchReserve: $1 offset, $2-$4 IDs, $5 fingerprints, $6 lease µs, $7 hold µs.
var sqlBatchReserve = `WITH ` + nowCTE + `,
i AS (SELECT * FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[], $6::BIGINT[], $7::BIGINT[]) WITH ORDINALITY AS u(tenant, namespace, idem_key, fingerprint, lease_us, hold_us, ord)),
m AS (
	INSERT INTO idem_records AS r ` + insertCols + `
	SELECT i.tenant, i.namespace, i.idem_key, i.fingerprint, 1, 1, 1, n.t, n.t + i.lease_us * INTERVAL '1 microsecond', n.t + i.hold_us * INTERVAL '1 microsecond' FROM i, n ORDER BY i.ord
	ON CONFLICT (tenant, namespace, idem_key) DO UPDATE SET` + reserveUpdate + `
	WHERE ` + reserveRule + `
	RETURNING ` + cols("r", true) + `
)
SELECT true, ` + cols("m", true) + `, n.t FROM m, n
UNION ALL
SELECT false, i.tenant, i.namespace, i.idem_key, ` + cols("c", false) + `, n.t
FROM i CROSS JOIN n CROSS JOIN LATERAL (
	SELECT ` + cols("r", false) + ` FROM idem_records AS r
	WHERE r.tenant = i.tenant AND r.namespace = i.namespace AND r.idem_key = i.idem_key LIMIT 1
) AS c
WHERE (i.tenant, i.namespace, i.idem_key) NOT IN (SELECT m.tenant, m.namespace, m.idem_key FROM m)`

// BatchComplete sends one sqlComplete per item in a pgx batch: one network
// write and one read, so one round trip, and each statement is the
// single-row Complete whose plan is a primary-key probe. An UPDATE … FROM
// unnest(…) would be one statement, but PostgreSQL plans its join from table
// statistics and, on a table fresh from a burst of inserts, was measured
// scanning the table or looping item × item.

// sqlList: $1 offset, $2 tenant, $3 namespace, $4 after, $5 prefix, $6 limit.
// %[1]s is the dialect's byte-order collation clause, %[2]s the columns.
const sqlList = `WITH ` + nowCTE + `
SELECT true, %[2]s, n.t FROM idem_records AS r, n
WHERE r.tenant = $2::TEXT AND r.namespace = $3::TEXT AND r.expires_at > n.t
AND r.idem_key%[1]s > $4::TEXT AND left(r.idem_key, length($5::TEXT)) = $5::TEXT
ORDER BY r.idem_key%[1]s LIMIT $6::BIGINT`

// sqlStats: $1 offset, $2 tenant, $3 namespace or empty for all. The empty
// tenant is a tenant like any other, never "all tenants".
const sqlStats = `WITH ` + nowCTE + `
SELECT r.namespace, r.state, count(*) FROM idem_records AS r, n
WHERE r.tenant = $2::TEXT AND ($3::TEXT = '' OR r.namespace = $3::TEXT) AND r.expires_at > n.t
GROUP BY r.namespace, r.state`

// sqlSweep deletes up to $2 expired rows. SKIP LOCKED lets every replica
// sweep at once without waiting on each other or on live writers, and the
// outer condition re-checks expiry on the row actually deleted.
const sqlSweep = `DELETE FROM idem_records
WHERE (tenant, namespace, idem_key) IN (
	SELECT tenant, namespace, idem_key FROM idem_records
	WHERE expires_at <= now() + $1::BIGINT * INTERVAL '1 microsecond'
	LIMIT $2::BIGINT FOR UPDATE SKIP LOCKED
) AND expires_at <= now() + $1::BIGINT * INTERVAL '1 microsecond'`
