// Package sengo owns everything SenGo-shaped: the transaction object that
// arrives in callbacks and API answers (envelope or flat), its validation
// with field-level errors and its mapping to event.Event; the API client
// (signed requests, typed errors, retries of idempotent calls); and the
// Confirmer that checks a notification against SenGo's API. sengo/sandbox
// is a local SenGo emulator.
//
// It may import event and verify; it never logs.
package sengo
