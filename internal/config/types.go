package config

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as a Go duration string ("30s",
// "720h"). Integers are rejected: "30" could mean seconds or nanoseconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts only a string scalar.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf("line %d: duration must be a string like \"30s\", got %s", n.Line, n.Value)
	}
	return d.UnmarshalText([]byte(n.Value))
}

// UnmarshalText parses a Go duration string (used for environment overrides).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a form like \"30s\", \"5m\", \"720h\")", string(b))
	}
	*d = Duration(v)
	return nil
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
		return fmt.Errorf("line %d: secret must be a string", n.Line)
	}
	*s = Secret(n.Value)
	return nil
}
