package event

import (
	"regexp"
	"testing"
)

func TestIDDeterministicAndDistinct(t *testing.T) {
	a := ID("main", "66e934f6-f5d6-4f1c-bb3d-450ec2873782", StatusSuccess)
	if b := ID("main", "66e934f6-f5d6-4f1c-bb3d-450ec2873782", StatusSuccess); a != b {
		t.Fatalf("same input, different ids: %s %s", a, b)
	}
	if !regexp.MustCompile(`^evt_[0-9a-f]{32}$`).MatchString(a) {
		t.Fatalf("id %q has the wrong form", a)
	}
	others := []string{
		ID("main", "66e934f6-f5d6-4f1c-bb3d-450ec2873782", StatusPending),
		ID("other", "66e934f6-f5d6-4f1c-bb3d-450ec2873782", StatusSuccess),
		ID("main", "66e934f6-f5d6-4f1c-bb3d-450ec2873783", StatusSuccess),
		ID("mai", "n66e934f6-f5d6-4f1c-bb3d-450ec2873782", StatusSuccess), // boundary shift
	}
	for _, o := range others {
		if o == a {
			t.Errorf("different status change got the same id %s", a)
		}
	}
}

func TestSubjects(t *testing.T) {
	if got, want := EventSubject("main", ProductRetail, StatusSuccess), "sengo.events.main.retail.success"; got != want {
		t.Errorf("EventSubject = %s, want %s", got, want)
	}
	if got, want := InboxSubject("main"), "sengo.inbox.main"; got != want {
		t.Errorf("InboxSubject = %s, want %s", got, want)
	}
}

func TestSubjectMatches(t *testing.T) {
	tests := []struct {
		filter, subject string
		want            bool
	}{
		{"sengo.events.*.*.success", "sengo.events.main.retail.success", true},
		{"sengo.events.*.*.success", "sengo.events.main.retail.pending", false},
		{"sengo.events.>", "sengo.events.main.retail.pending", true},
		{"sengo.events.>", "sengo.events", false},
		{"sengo.events.main.retail.success", "sengo.events.main.retail.success", true},
		{"sengo.events.*", "sengo.events.main.retail", false},
	}
	for _, tt := range tests {
		if got := SubjectMatches(tt.filter, tt.subject); got != tt.want {
			t.Errorf("SubjectMatches(%q, %q) = %v", tt.filter, tt.subject, got)
		}
	}
}
