package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as a Go duration string ("30s",
// "720h"), or with a leading whole number of days ("30d", "1d12h"); see
// ParseDuration. Integers are rejected: "30" could mean seconds or
// nanoseconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts only a string scalar. Its errors are
// *yaml.TypeError, so decoding goes on and every problem is reported.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return lineError(n, fmt.Sprintf("duration must be a string like \"30s\", got %s", n.Value))
	}
	if err := d.UnmarshalText([]byte(n.Value)); err != nil {
		return lineError(n, err.Error())
	}
	return nil
}

// lineError is a decoding problem yaml.v3 collects instead of stopping.
func lineError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}

// UnmarshalText parses a duration (used for environment overrides).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration reads a Go duration ("90m", "48h") that may begin with a
// whole number of days ("30d", "7d12h"): a day is 24 hours. The error
// names the accepted forms.
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("invalid duration %q (use a form like \"30s\", \"5m\", \"48h\", \"30d\")", s)
	rest := s
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16) // at most 65535 days
		if err != nil {
			return 0, bad
		}
		days, rest = time.Duration(n)*24*time.Hour, s[i+1:]
		if rest == "" {
			return days, nil
		}
	}
	v, err := time.ParseDuration(rest)
	if err != nil || days > 0 && v < 0 {
		return 0, bad
	}
	return days + v, nil
}

// MarshalText writes the duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Secret is a string that never prints: fmt, logs, JSON and YAML see
// "[redacted]". Use Value to read it.
type Secret string

// Value returns the secret itself.
func (s Secret) Value() string { return string(s) }

// Set reports whether the secret is non-empty.
func (s Secret) Set() bool { return s != "" }

func (s Secret) String() string   { return "[redacted]" }
func (s Secret) GoString() string { return "[redacted]" }

// MarshalText redacts the secret in every encoding.
func (s Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// UnmarshalText takes the secret as is.
func (s *Secret) UnmarshalText(b []byte) error { *s = Secret(b); return nil }

// UnmarshalYAML takes a string scalar as is (without it, yaml.v3 would use
// UnmarshalText on any scalar, including numbers).
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "a secret must be a string")
	}
	*s = Secret(n.Value)
	return nil
}
