package stream

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// A generated password (32 random bytes) is hashed at bcrypt's lowest
// cost: the server checks it on each of the relay's connects, and nothing
// guesses it anyway. A shorter one, which a person may have chosen, keeps
// the default cost.
func TestPasswordHashCost(t *testing.T) {
	pw, err := PasswordFromFile(t.TempDir(), RelayPasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(pw) != generatedPasswordLen {
		t.Fatalf("a generated password has %d characters, generatedPasswordLen says %d", len(pw), generatedPasswordLen)
	}
	for _, c := range []struct {
		pw   string
		cost int
	}{{pw, bcrypt.MinCost}, {"sub-pw-0123456789", bcrypt.DefaultCost}, {pw[:generatedPasswordLen-1], bcrypt.DefaultCost}} {
		if got, err := bcrypt.Cost([]byte(bcryptHash(c.pw))); err != nil || got != c.cost {
			t.Errorf("a %d-character password hashed at cost %d (%v), want %d", len(c.pw), got, err, c.cost)
		}
	}
}
