package event

import "testing"

// FuzzUnmarshal: the event decoder never panics, and what it decodes
// encodes and decodes again to the same id and data.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"evt_1","source":"sengo/main","type":"id.sengo.transaction.success","time":"2025-03-23T03:05:13Z","data":{"transactionId":"t","status":"success","previousStatus":"pending","raw":{"a":[1,2]}}}`))
	f.Add([]byte(`{"data":{"raw":null}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"time":"not a time"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Unmarshal(b)
		if err != nil {
			return
		}
		out, err := Marshal(ev)
		if err != nil {
			return // e.g. raw that is not valid JSON on its own
		}
		back, err := Unmarshal(out)
		if err != nil || back.ID != ev.ID || back.Data.TransactionID != ev.Data.TransactionID || back.Data.Status != ev.Data.Status {
			t.Fatalf("round trip changed the event: %v\n%s", err, out)
		}
	})
}
