package stream

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Password files of the embedded server's identities, in its store dir.
const (
	RelayPasswordFile      = "relay.password"
	SubscriberPasswordFile = "subscriber.password"
)

// generatedPasswordLen is the length of a password PasswordFromFile
// makes: 32 random bytes, unpadded base64url.
const generatedPasswordLen = 43

// PasswordFromFile reads the password kept in dir/name, creating it (mode
// 0600, 32 random bytes) on first use. It is never logged.
func PasswordFromFile(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	// Empty: written, and lost to a power cut before its data reached the
	// disk (or a disk that filled): every start failed on it until someone
	// removed it by hand. Made anew; nothing could have used it.
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
		if err := os.Remove(path); err != nil {
			return "", fmt.Errorf("remove the empty %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		pw := newPassword()
		_, werr := f.WriteString(pw + "\n")
		if werr == nil {
			werr = f.Sync() // on disk before the server is given it
		}
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = syncDir(dir)
		}
		if werr != nil {
			return "", fmt.Errorf("write %s: %w", path, werr)
		}
		return pw, nil
	case !errors.Is(err, fs.ErrExist):
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	return ReadPassword(path)
}

// newPassword is a password as PasswordFromFile makes one: 32 random
// bytes, unpadded base64url (generatedPasswordLen: bcrypt's lowest cost).
func newPassword() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// syncDir fsyncs directory dir: a file created in it is found after a
// power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadPassword reads a password file written by PasswordFromFile.
func ReadPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s (run as the relay's user, with its data_dir): %w", path, err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return pw, nil
}
