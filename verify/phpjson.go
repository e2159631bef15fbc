package verify

import (
	"bytes"
	"encoding/json"
)

// PHPJSON encodes v the way PHP's json_encode does with default flags, which
// is the byte form SenGo signs: compact, keys in struct field order, "/"
// escaped as "\/", and "<", ">", "&" left as they are. Sign and send the
// bytes it returns; re-encoding them differently breaks the signature.
//
// Non-ASCII text is left as UTF-8 (PHP would write \uXXXX escapes). That is
// harmless because the signature covers the bytes actually sent.
func PHPJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	// In JSON text a "/" can only occur inside a string, so escaping every
	// one of them is exactly what json_encode does.
	return bytes.ReplaceAll(out, []byte("/"), []byte(`\/`)), nil
}
