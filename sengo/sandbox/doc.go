// Package sandbox owns a local emulator of SenGo's API for development and
// for this project's end-to-end tests: the same endpoints, headers,
// signature and IP checks, response envelope and error codes, fees, payment
// codes and VA numbers, expiry, the 7-day listing window and a balance that
// moves with settled transactions. It sends callbacks (envelope form) when
// a transaction changes status, with configurable retries, duplicates and
// drops, and has control endpoints to pay, expire or fail a transaction,
// list sent callbacks and inject faults.
//
// It imports sengo (the wire types), event and verify.
package sandbox
