package verify

import "testing"

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
