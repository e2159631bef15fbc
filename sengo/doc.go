// Package sengo owns SenGo's wire format: the transaction object that
// arrives in callbacks (envelope or flat), its validation with field-level
// errors, and its mapping to the normalized event.Event.
//
// It will also hold the SenGo API client and, in sengo/sandbox, a local
// SenGo emulator. It may import event and verify; it never logs.
package sengo
