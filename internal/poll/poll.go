package poll

import (
	"os"
	"testing"
	"time"
)

// Deadline is how long Until waits before failing the test: 30 s, or
// SENGO_TEST_DEADLINE (a Go duration). scripts/mutants sets it
// shorter: a test catching a mutant mostly fails by waiting for what the
// mutant stopped, and 30 s of it per mutant was most of CI's time. Not
// SENGO_RELAY_…: the relay refuses a variable with that prefix that names
// no setting, so every relay a test started failed to start, and every
// mutant caught by such a test was "killed" by that alone.
var Deadline = deadline()

func deadline() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("SENGO_TEST_DEADLINE")); err == nil && d > 0 {
		return d
	}
	return 30 * time.Second
}

// Until checks cond every few milliseconds until it returns true, and
// fails the test if that takes longer than Deadline.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Deadline, what, cond)
}

// Within is Until with its own deadline, for outcomes that legitimately
// take long (an ack wait after a crash, a leader election).
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}
