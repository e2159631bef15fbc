//go:build linux

package stream

import "testing"

// Group commit trusts syncfs to report a failed write-back, which Linux
// does from 5.8 on; an older kernel's syncfs said 0 all the same.
func TestGroupCommitNeedsAKernelThatReportsErrors(t *testing.T) {
	for release, want := range map[string]bool{
		"6.18.44-fc-v1272": true, "5.8.0": true, "5.10.0-28-amd64": true, "6.1": true,
		"5.7.19": false, "4.19.0-25-amd64": false, "3.10.0-1160.el7.x86_64": false, "": false, "x.y": false,
	} {
		if got := kernelAtLeast(release, 5, 8); got != want {
			t.Errorf("kernelAtLeast(%q, 5, 8) = %v, want %v", release, got, want)
		}
	}
}
