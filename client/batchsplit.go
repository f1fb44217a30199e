package client

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// DefaultMaxRequestBytes is the largest BatchComplete request the client
// sends as one call without WithMaxRequestBytes: 4 MiB, what idemd reads
// under its default limits. idemd reads max(4 MiB, 2×--max-result-bytes +
// 64 KiB), never less than this, so the default is safe against any idemd;
// against one with a raised result limit it only makes more calls than
// needed.
const DefaultMaxRequestBytes = 4 << 20

// maxSplitItems is the most items of a BatchComplete the client splits:
// idemd's default batch limit. A larger request is sent whole, so that
// idemd refuses it as too many items instead of the client turning it
// into several accepted calls.
const maxSplitItems = 1000

// WithMaxRequestBytes sets the largest encoded BatchComplete request the
// client sends as one call (DefaultMaxRequestBytes, 4 MiB, by default;
// n <= 0 keeps it); a larger one is split (see Client.BatchComplete). Set
// it to what your idemd reads, max(4 MiB, 2×--max-result-bytes + 64 KiB),
// to send fewer calls when idemd's result limit is raised; above that,
// idemd refuses the calls by size.
func WithMaxRequestBytes(n int) Option {
	return func(o *clientOptions) { o.maxRequest = max(n, 0) }
}

// batchChunk is one call of a split BatchComplete.
type batchChunk struct {
	req   *idemv1.BatchCompleteRequest
	start int  // index in the caller's request of req's first item
	alone bool // one item over the bound even alone
	size  int  // req's encoded size
}

// splitBatchComplete cuts req into calls whose encoded size is at most
// bound (DefaultMaxRequestBytes when 0), items in request order, each
// call as large as fits; an item that does not fit with any other goes
// alone. It returns nil when req is to be sent as it is: it fits, it has
// more than maxSplitItems items, or its fields other than the items alone
// fill the bound.
func splitBatchComplete(req *idemv1.BatchCompleteRequest, bound int) []batchChunk {
	if bound <= 0 {
		bound = DefaultMaxRequestBytes
	}
	items := req.GetItems()
	if len(items) == 0 || len(items) > maxSplitItems || req.SizeVT() <= bound {
		return nil
	}
	head := batchHeader(req).SizeVT()
	if head >= bound {
		return nil
	}
	var chunks []batchChunk
	cut := func(from, to, size int) {
		r := batchHeader(req)
		r.Items = items[from:to:to]
		chunks = append(chunks, batchChunk{req: r, start: from, alone: to-from == 1 && size > bound, size: size})
	}
	start, size := 0, head
	for i, it := range items {
		n := protowire.SizeTag(batchItemsField) + protowire.SizeBytes(it.SizeVT())
		if i > start && size+n > bound {
			cut(start, i, size)
			start, size = i, head
		}
		size += n
	}
	cut(start, len(items), size)
	return chunks
}

// batchItemsField is BatchCompleteRequest's items field.
const batchItemsField = 4

// batchHeader is a new request with req's fields other than its items
// (tenant, namespace, retention, and any field added later), sharing their
// values.
func batchHeader(req *idemv1.BatchCompleteRequest) *idemv1.BatchCompleteRequest {
	h := &idemv1.BatchCompleteRequest{}
	dst, src := h.ProtoReflect(), req.ProtoReflect()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != batchItemsField {
			dst.Set(fd, v)
		}
		return true
	})
	if u := src.GetUnknown(); len(u) > 0 {
		dst.SetUnknown(u)
	}
	return h
}

// sendBatchComplete sends chunks one after the other with send and merges
// the answers in request order. The first call failing as a whole ends it
// with that call's error, unless the call is one item alone that idemd
// refused by size: that item then gets its own error.
func sendBatchComplete(ctx context.Context,
	send func(context.Context, *idemv1.BatchCompleteRequest, ...grpc.CallOption) (*idemv1.BatchCompleteResponse, error),
	n int, chunks []batchChunk) (*idemv1.BatchCompleteResponse, error) {
	out := &idemv1.BatchCompleteResponse{Results: make([]*idemv1.BatchCompleteResponse_Result, 0, n)}
	for _, ch := range chunks {
		resp, err := send(ctx, ch.req)
		switch {
		case err == nil && len(resp.GetResults()) != len(ch.req.GetItems()):
			return nil, status.Errorf(codes.Internal, "idem: BatchComplete answered %d results for %d items", len(resp.GetResults()), len(ch.req.GetItems()))
		case err == nil:
			for j, r := range resp.GetResults() {
				renumber(r.GetError(), j, ch.start+j)
			}
			out.Results = append(out.Results, resp.GetResults()...)
		case ch.alone && refusedBySize(err) && ctx.Err() == nil:
			out.Results = append(out.Results, &idemv1.BatchCompleteResponse_Result{Error: &idemv1.ItemError{
				Code: int32(codes.InvalidArgument),
				Message: fmt.Sprintf("idem: invalid request: items[%d].result is too large: the item alone makes a %d-byte request, more than idemd reads (%s)",
					ch.start, ch.size, status.Convert(err).Message()),
			}})
		default:
			return nil, err
		}
	}
	return out, nil
}

// refusedBySize: gRPC's RESOURCE_EXHAUSTED for a message over the size
// idemd reads, which unlike idemd's load shedding carries no RetryInfo.
func refusedBySize(err error) bool {
	return status.Code(err) == codes.ResourceExhausted && !retryable(err)
}

// renumber makes an item error of a split call name the item by its index
// in the caller's request, as idemd would have named it in one call.
func renumber(e *idemv1.ItemError, local, global int) {
	if e == nil || local == global {
		return
	}
	e.Message = strings.ReplaceAll(e.GetMessage(), fmt.Sprintf("items[%d]", local), fmt.Sprintf("items[%d]", global))
}
