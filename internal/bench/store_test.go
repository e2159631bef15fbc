package bench

import (
	"strings"
	"testing"
)

// The report names the store it measured, and is meant to be pasted into
// BENCHMARKS.md: --nats-url's credentials were printed in it as given.
func TestReportNamesTheStoreWithoutCredentials(t *testing.T) {
	for _, url := range []string{"nats://bench:S3cretPass@n1:4222", "nats://S3cretToken@n1:4222", "bench:S3cretPass@n1:4222,nats://n2:4222"} {
		got := storeName(Config{NATSURL: url})
		if strings.Contains(got, "S3cret") || !strings.HasPrefix(got, "external ") || !strings.Contains(got, "n1:4222") {
			t.Errorf("store of %q named %q", url, got)
		}
	}
}
