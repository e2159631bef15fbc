package verify

import (
	"strconv"
	"testing"
)

// Tokens are compared whole: of 65,536 near misses none passes (a
// comparison of the hashes' first two bytes or fewer lets some through).
func TestTokenComparesAllOfIt(t *testing.T) {
	const want = "s3cret-path-token"
	for i := range 1 << 16 {
		if Token(want, want+strconv.Itoa(i)) {
			t.Fatalf("Token took %q for %q", want+strconv.Itoa(i), want)
		}
	}
}

func TestToken(t *testing.T) {
	tests := []struct {
		want, got string
		ok        bool
	}{
		{"s3cret-path-token", "s3cret-path-token", true},
		{"s3cret-path-token", "s3cret-path-tokeN", false},
		{"s3cret-path-token", "s3cret", false},
		{"s3cret-path-token", "", false},
		{"", "", false}, // no token configured never authenticates
	}
	for _, tt := range tests {
		if got := Token(tt.want, tt.got); got != tt.ok {
			t.Errorf("Token(%q, %q) = %v, want %v", tt.want, tt.got, got, tt.ok)
		}
	}
}
