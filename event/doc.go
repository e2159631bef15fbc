// Package event owns sengo-relay's domain and public contract: the
// normalized transaction Event (CloudEvents 1.0), the Status values and the
// rules for moving between them, the Product kinds, the NATS subjects and
// stream names, and deterministic event ids.
//
// Everything a consumer of SENGO_EVENTS relies on is defined here, so a
// change to this package is a change to the contract. It imports only the
// standard library and never logs.
package event
