package stream

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// A generated password (32 random bytes) is hashed at bcrypt's lowest
// cost: the server checks it on each of the relay's connects, and nothing
// guesses it anyway. A shorter one, which a person may have chosen, keeps
// the default cost.
func TestPasswordHashCost(t *testing.T) {
	dir := t.TempDir()
	pw, err := PasswordFromFile(dir, RelayPasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	// Only the relay's user reads it: the relay's password opens every
	// stream, the subscriber's every event.
	if fi, err := os.Stat(filepath.Join(dir, RelayPasswordFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the password file: %v, mode %v; want 0600", err, fi.Mode().Perm())
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

// A password file left empty (created, and its data lost to a power cut
// before it reached the disk) stopped every start until someone removed
// it by hand. It is made anew.
func TestAnEmptyPasswordFileIsMadeAnew(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, RelayPasswordFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pw, err := PasswordFromFile(dir, RelayPasswordFile)
	if err != nil || len(pw) != generatedPasswordLen {
		t.Fatalf("an empty password file: %q, %v", pw, err)
	}
	if again, err := ReadPassword(filepath.Join(dir, RelayPasswordFile)); err != nil || again != pw {
		t.Fatalf("read back %q, %v; want %q", again, err, pw)
	}
}

// Each store's generated password is its own random one (two stores, two
// passwords), and a password file holding only blanks (a line break, an
// editor's save) is refused, not read as an empty password.
func TestPasswordsAreRandomAndNeverBlank(t *testing.T) {
	a, err := PasswordFromFile(t.TempDir(), "pw")
	if err != nil {
		t.Fatal(err)
	}
	b, err := PasswordFromFile(t.TempDir(), "pw")
	if err != nil {
		t.Fatal(err)
	}
	if a == b || len(a) != generatedPasswordLen {
		t.Fatalf("two stores' passwords: %d characters, equal %v", len(a), a == b)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if pw, err := PasswordFromFile(dir, "pw"); err == nil {
		t.Fatalf("a file of blanks gave the password %q", pw)
	}
	if pw, err := ReadPassword(filepath.Join(dir, "pw")); err == nil {
		t.Fatalf("a file of blanks read as the password %q", pw)
	}
}
