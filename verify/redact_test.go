package verify

import "testing"

// A URL that is its own credential must not show its token: deeper path
// segments were always dropped, but a token that is the only segment
// (https://hooks.example/3f9aK2…) was shown whole.
func TestRedactURLHidesTokenPaths(t *testing.T) {
	for raw, want := range map[string]string{
		"https://hooks.example/AbC123secretTOKENxyz":                 "https://hooks.example/…",
		"https://hooks.example/AbC123secretTOKENxyz/":                "https://hooks.example/…",
		"https://hooks.example/3f9a2b7c-1d2e-4f5a-8b9c-0d1e2f3a4b5c": "https://hooks.example/…",
		"https://hooks.example/T00/B00/secret":                       "https://hooks.example/…",
		"https://hooks.example/services/T00/B00/secret":              "https://hooks.example/services/…",
		"https://user:pw@orders.example/hook?key=secret#frag":        "https://orders.example/hook",
		"https://orders.example/hook/":                               "https://orders.example/hook/",
		"https://orders.example/webhooks/sengo":                      "https://orders.example/webhooks/…",
		"http://127.0.0.1:9000":                                      "http://127.0.0.1:9000",
		"http://127.0.0.1:9000/":                                     "http://127.0.0.1:9000/",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
