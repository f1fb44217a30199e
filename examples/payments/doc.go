// Command payments is a small, real gRPC payment service that delegates
// deduplication to idem through the client interceptors: every Charge
// carries an idempotency-key; a retried, duplicated or replayed Charge
// debits the account once and every caller gets the same answer.
//
// Run it with an in-process idem (memory store):
//
//	go run ./examples/payments -listen 127.0.0.1:8081
//
// or against an idemd (its default address is 127.0.0.1:50051):
//
//	go run ./cmd/idemd --store memory://
//	go run ./examples/payments -listen 127.0.0.1:8081 -idem dns:///127.0.0.1:50051 -idem-insecure
//
// and charge with any gRPC client, e.g. grpcurl (reflection is on):
//
//	grpcurl -plaintext -H 'idempotency-key: order-42' \
//	  -d '{"account":"alice","amount_cents":1250,"currency":"EUR"}' \
//	  127.0.0.1:8081 payments.v1.PaymentsService/Charge
//
// Repeat the command: the answer is the same, the response header
// idempotency-replayed: true says it was replayed, and GetBalance shows one
// charge.
package main
