package event

import "testing"

func TestDecide(t *testing.T) {
	tests := []struct {
		current, next Status
		want          Decision
	}{
		{"", StatusPending, Publish},
		{"", StatusSuccess, Publish},
		{StatusPending, StatusPending, Duplicate},
		{StatusPending, StatusSuccess, Publish},
		{StatusPending, StatusExpired, Publish},
		{StatusPending, StatusFailed, Publish},
		{StatusSuccess, StatusSuccess, Duplicate},
		{StatusSuccess, StatusPending, Stale},
		{StatusExpired, StatusPending, Stale},
		{StatusFailed, StatusPending, Stale},
		{StatusSuccess, StatusExpired, Conflict},
		{StatusExpired, StatusSuccess, Conflict},
		{StatusFailed, StatusSuccess, Conflict},
	}
	for _, tt := range tests {
		if got := Decide(tt.current, tt.next); got != tt.want {
			t.Errorf("Decide(%q, %q) = %v, want %v", tt.current, tt.next, got, tt.want)
		}
	}
}

func TestParseStatus(t *testing.T) {
	for _, s := range Statuses {
		if got, err := ParseStatus(string(s)); err != nil || got != s {
			t.Errorf("ParseStatus(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "SUCCESS", "paid", "success "} {
		if _, err := ParseStatus(s); err == nil {
			t.Errorf("ParseStatus(%q) accepted", s)
		}
	}
}
