// Package receiver owns the HTTP edge and the intake of SenGo notifications:
// the Echo application (POST /callbacks/sengo/{project}[/{token}],
// /healthz, /readyz; /metrics when the caller asks), the checks every callback passes before it
// is stored, publishing the raw notification to SENGO_INBOX, and the intake
// workers that turn inbox notifications into normalized events in
// SENGO_EVENTS exactly once per status change.
//
// It may import event, verify, sengo, stream, Echo and nats.go. It never
// imports dispatcher.
package receiver
