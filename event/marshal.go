package event

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Marshal encodes e as the bytes stored in SENGO_EVENTS and sent to
// webhooks. HTML characters are not escaped, so data.raw keeps SenGo's
// names and values as sent (compacted: whitespace between tokens goes).
func Marshal(e Event) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Unmarshal decodes an event as produced by Marshal.
func Unmarshal(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	return e, nil
}
