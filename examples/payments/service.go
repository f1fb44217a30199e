package main

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
	paymentsv1 "github.com/idemhq/idem/examples/payments/proto/payments/v1"
)

// paymentsService implements PaymentsService over a Ledger.
type paymentsService struct {
	paymentsv1.UnimplementedPaymentsServiceServer
	ledger *Ledger
	// beforePost and afterPost, when set, run around the ledger write; the
	// tests use them to crash or stall the handler at either point.
	beforePost func(ctx context.Context, key string)
	afterPost  func(ctx context.Context, key string)
}

func newPaymentsService(l *Ledger) *paymentsService { return &paymentsService{ledger: l} }

func (s *paymentsService) Charge(ctx context.Context, req *paymentsv1.ChargeRequest) (*paymentsv1.ChargeResponse, error) {
	switch {
	case req.GetAccount() == "":
		return nil, status.Error(codes.InvalidArgument, "payments: account is required")
	case req.GetAmountCents() <= 0:
		return nil, status.Errorf(codes.InvalidArgument, "payments: amount must be positive, got %d", req.GetAmountCents())
	case req.GetCurrency() != "EUR" && req.GetCurrency() != "USD":
		return nil, status.Errorf(codes.InvalidArgument, "payments: currency %q is not supported", req.GetCurrency())
	}
	key := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(client.MetadataKey)) > 0 {
		key = md.Get(client.MetadataKey)[0]
	}
	token, _ := client.TokenFromContext(ctx)
	if s.beforePost != nil {
		s.beforePost(ctx, key)
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	e, err := s.ledger.Post(key, token, charge{
		Account: req.GetAccount(), AmountCents: req.GetAmountCents(), Currency: req.GetCurrency(), Description: req.GetDescription(),
	})
	switch {
	case errors.Is(err, errKeyReused):
		st, _ := status.New(codes.FailedPrecondition, err.Error()).WithDetails(
			&errdetails.ErrorInfo{Reason: client.ReasonKeyReused, Domain: client.ErrorDomain})
		return nil, st.Err()
	case err != nil:
		return nil, status.Error(codes.Internal, err.Error())
	}
	if s.afterPost != nil {
		s.afterPost(ctx, key)
	}
	return &paymentsv1.ChargeResponse{
		ChargeId: e.ChargeID, Account: e.Account, AmountCents: e.AmountCents, Currency: e.Currency, BalanceCents: e.BalanceCents,
	}, nil
}

func (s *paymentsService) GetBalance(_ context.Context, req *paymentsv1.GetBalanceRequest) (*paymentsv1.GetBalanceResponse, error) {
	bal, n := s.ledger.Balance(req.GetAccount())
	return &paymentsv1.GetBalanceResponse{Account: req.GetAccount(), BalanceCents: bal, Charges: n}, nil
}
