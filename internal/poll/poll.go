package poll

import (
	"testing"
	"time"
)

// Deadline is how long Until waits before failing the test.
const Deadline = 30 * time.Second

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
