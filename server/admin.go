package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
	// pageTokenPrefix marks the tokens of earlier versions, the key alone;
	// still accepted, so a listing begun on an older replica goes on on a
	// newer one (not the reverse: an older replica refuses k2 tokens).
	pageTokenPrefix = "k1:"
	// boundTokenPrefix marks tokens that also hold listingBytes bytes
	// naming the listing they belong to.
	boundTokenPrefix = "k2:"
	listingBytes     = 8
)

// DeleteKey implements idemv1.AdminServiceServer.
func (s *Service) DeleteKey(ctx context.Context, req *idemv1.DeleteKeyRequest) (*idemv1.DeleteKeyResponse, error) {
	rec, err := s.adminKeyOp(ctx, idemv1.AdminService_DeleteKey_FullMethodName, req, boundedStore.Delete)
	if err != nil {
		return nil, err
	}
	return &idemv1.DeleteKeyResponse{Record: rec}, nil
}

// ForceRelease implements idemv1.AdminServiceServer.
func (s *Service) ForceRelease(ctx context.Context, req *idemv1.ForceReleaseRequest) (*idemv1.ForceReleaseResponse, error) {
	rec, err := s.adminKeyOp(ctx, idemv1.AdminService_ForceRelease_FullMethodName, req, boundedStore.ForceRelease)
	if err != nil {
		return nil, err
	}
	return &idemv1.ForceReleaseResponse{Record: rec}, nil
}

// keyRequest is a request naming one record and nothing else.
type keyRequest interface {
	GetTenant() string
	GetNamespace() string
	GetKey() string
}

// keyScope validates a request that names one record and returns its
// scope and ID, or the error to answer with.
func (s *Service) keyScope(ctx context.Context, method string, req keyRequest) (scope, storage.ID, error) {
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return sc, storage.ID{}, s.Status(ctx, method, err)
	}
	s.checkKey(&v, "key", req.GetKey())
	if err := v.err(); err != nil {
		return sc, storage.ID{}, err
	}
	return sc, storage.ID{Tenant: sc.tenant, Namespace: req.GetNamespace(), Key: req.GetKey()}, nil
}

// adminKeyOp validates an admin request for one record, applies op to it,
// and wakes the record's waiters: whatever op did, it no longer holds them.
func (s *Service) adminKeyOp(ctx context.Context, method string, req keyRequest, op func(boundedStore, context.Context, storage.ID) (*storage.Record, error)) (*idemv1.Record, error) {
	sc, id, err := s.keyScope(ctx, method, req)
	if err != nil {
		return nil, err
	}
	rec, err := op(sc.store, ctx, id)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	s.notifier.notify(id)
	return recordToProto(rec, true), nil
}

// ListKeys implements idemv1.AdminServiceServer. The page token is opaque
// to callers: the last key of the previous page, encoded.
func (s *Service) ListKeys(ctx context.Context, req *idemv1.ListKeysRequest) (*idemv1.ListKeysResponse, error) {
	const method = idemv1.AdminService_ListKeys_FullMethodName
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	scoped := len(v) == 0
	v.checkText("key_prefix", req.GetKeyPrefix(), s.opts.limits.MaxKeyBytes, false)
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxPageSize:
		v.add("page_size", "is %d, want 0–%d", size, maxPageSize)
	case size == 0:
		size = defaultPageSize
	}
	listing := listingOf(sc.tenant, req.GetNamespace(), req.GetKeyPrefix())
	after, from, ok := decodePageToken(req.GetPageToken())
	switch {
	case !ok:
		v.add("page_token", "is not a token from a previous ListKeys response")
	case scoped && from != nil && !bytes.Equal(from, listing[:]):
		// Another listing's position would skip this one's keys before it.
		v.add("page_token", "is from a ListKeys of another tenant, namespace or key_prefix")
	case after != "":
		// The token comes back from the caller: its key must be one a
		// store can compare, as a forged one reaches the store's query.
		// The error says what is wrong with it: a token ListKeys gave
		// out before the key limit was lowered holds a longer key.
		var kv violations
		s.checkKey(&kv, "page_token", after)
		if len(kv) > 0 {
			v.add("page_token", "holds a key that %s: it is not a token from a ListKeys response under the current key limit", kv[0].Description)
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	recs, more, err := sc.store.List(ctx, storage.ListParams{
		Tenant:    sc.tenant,
		Namespace: req.GetNamespace(),
		KeyPrefix: req.GetKeyPrefix(),
		After:     after,
		Limit:     size,
	})
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	// A page ends early where its records, and the token that would follow
	// them, would pass what idemd reads in a request (1,000 records with
	// 1 MiB results would be a GiB); the next page starts after the last
	// record answered. A record alone always fits.
	resp := &idemv1.ListKeysResponse{Records: make([]*idemv1.Record, 0, len(recs))}
	budget, used, last := answerBytes(s.opts.limits), 0, ""
	for _, r := range recs {
		pr := recordToProto(r, true)
		n := entrySize(pr)
		if used+n+pageTokenSize(r.Key) > budget && len(resp.Records) > 0 {
			more = true
			break
		}
		used += n
		resp.Records = append(resp.Records, pr)
		last = r.Key
	}
	if more && len(resp.Records) > 0 {
		resp.NextPageToken = encodeBoundPageToken(listing, last)
	}
	return resp, nil
}

// listingOf names a listing in its page tokens. It is no secret (the
// tenant is checked on every call): it catches a token passed to the
// wrong listing.
func listingOf(tenant, namespace, prefix string) [listingBytes]byte {
	h := sha256.New()
	for _, s := range []string{tenant, namespace, prefix} {
		var n [binary.MaxVarintLen64]byte
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	var out [listingBytes]byte
	copy(out[:], h.Sum(nil))
	return out
}

func encodeBoundPageToken(listing [listingBytes]byte, after string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(boundTokenPrefix + string(listing[:]) + after))
}

// pageTokenSize is what a next_page_token after key adds to a ListKeysResponse.
func pageTokenSize(key string) int {
	return protowire.SizeTag(2) + protowire.SizeBytes(base64.RawURLEncoding.EncodedLen(len(boundTokenPrefix)+listingBytes+len(key)))
}

// decodePageToken returns the key a token resumes after and the listing
// it names (nil for an earlier version's token, which names none).
func decodePageToken(tok string) (after string, listing []byte, ok bool) {
	if tok == "" {
		return "", nil, true
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", nil, false
	}
	if rest, ok := strings.CutPrefix(string(b), boundTokenPrefix); ok && len(rest) >= listingBytes {
		return rest[listingBytes:], []byte(rest[:listingBytes]), true
	}
	if rest, ok := strings.CutPrefix(string(b), pageTokenPrefix); ok {
		return rest, nil, true
	}
	return "", nil, false
}

// Stats implements idemv1.AdminServiceServer. With no namespace it counts
// every store the Service reaches (the one given to New, plus those a
// resolver names through a Stores() []storage.Store method), each for the
// namespaces routed to it only: after a policy reload moved a namespace to
// another store, the records left in the old one are unreachable, so they
// are not counted, and each (namespace, state) has one row, the same as a
// Stats of that namespace answers.
func (s *Service) Stats(ctx context.Context, req *idemv1.StatsRequest) (*idemv1.StatsResponse, error) {
	const method = idemv1.AdminService_Stats_FullMethodName
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), false)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	var rows []storage.StatsRow
	if req.GetNamespace() != "" {
		if rows, err = sc.store.Stats(ctx, sc.tenant, req.GetNamespace()); err != nil {
			return nil, s.Status(ctx, method, err)
		}
	} else {
		stores, route := s.statsRoutes()
		for _, st := range stores {
			r, err := s.bounded(st).Stats(ctx, sc.tenant, "")
			if err != nil {
				return nil, s.Status(ctx, method, err)
			}
			for _, row := range r {
				if route(sc.tenant, row.Namespace) == st {
					rows = append(rows, row)
				}
			}
		}
	}
	storage.SortStats(rows)
	resp := &idemv1.StatsResponse{Rows: make([]*idemv1.StatsResponse_Row, len(rows))}
	for i, r := range rows {
		resp.Rows[i] = &idemv1.StatsResponse_Row{Namespace: r.Namespace, State: stateToProto(r.State), Count: r.Count}
	}
	return resp, nil
}

// statsRoutes returns the distinct stores the Service reaches and the
// store each namespace is routed to, both from one policy when the
// resolver can give them together (a reload between the two would
// otherwise leave a moved namespace out, or count it twice).
func (s *Service) statsRoutes() ([]storage.Store, func(tenant, namespace string) storage.Store) {
	route := func(tenant, namespace string) storage.Store {
		st, _ := s.resolver.Resolve(tenant, namespace)
		return st
	}
	var list []storage.Store
	if r, ok := s.resolver.(interface {
		Routes() ([]storage.Store, func(tenant, namespace string) storage.Store)
	}); ok {
		list, route = r.Routes()
	} else if r, ok := s.resolver.(interface{ Stores() []storage.Store }); ok {
		list = r.Stores()
	}
	return s.withOwn(list), func(tenant, namespace string) storage.Store {
		if st := route(tenant, namespace); st != nil {
			return st
		}
		return s.store
	}
}

// stores lists the distinct stores the Service reaches: the one given to
// New and any a resolver reports.
func (s *Service) stores() []storage.Store {
	var list []storage.Store
	if r, ok := s.resolver.(interface{ Stores() []storage.Store }); ok {
		list = r.Stores()
	}
	return s.withOwn(list)
}

// withOwn is the store given to New followed by the distinct others of list.
func (s *Service) withOwn(list []storage.Store) []storage.Store {
	out := []storage.Store{s.store}
	for _, st := range list {
		if st != nil && !containsStore(out, st) {
			out = append(out, st)
		}
	}
	return out
}

func containsStore(list []storage.Store, st storage.Store) bool {
	for _, x := range list {
		if x == st {
			return true
		}
	}
	return false
}
