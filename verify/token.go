package verify

import (
	"crypto/sha256"
	"crypto/subtle"
)

// Token reports whether got equals want, in time that depends on neither
// value nor on their lengths (both are hashed first). An empty want never
// matches.
func Token(want, got string) bool {
	if want == "" {
		return false
	}
	w := sha256.Sum256([]byte(want))
	g := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(w[:], g[:]) == 1
}
