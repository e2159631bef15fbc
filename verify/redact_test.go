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

// A capability URL can keep its token in the host name
// (https://eo3h0p8w4v9h6b5.m.pipedream.net): a label that does not read
// as a word is hidden, as a path segment is; addresses and names of words
// are shown whole, with their port.
func TestRedactURLHidesTokenHosts(t *testing.T) {
	for raw, want := range map[string]string{
		"https://eo3h0p8w4v9h6b5.m.pipedream.net":            "https://….m.pipedream.net",
		"https://eo3h0p8w4v9h6b5.m.pipedream.net/hook?k=v":   "https://….m.pipedream.net/hook",
		"https://abcdefghijklmnopqrstu.example/hook":         "https://….example/hook",
		"https://orders.toko-maju.co.id/hook":                "https://orders.toko-maju.co.id/hook",
		"https://Orders.Example:8443/hook":                   "https://Orders.Example:8443/hook",
		"http://localhost:8080/hook":                         "http://localhost:8080/hook",
		"http://127.0.0.1:9000/hook":                         "http://127.0.0.1:9000/hook",
		"http://[::1]:9000/hook":                             "http://[::1]:9000/hook",
		"https://a1b2c3d4.example:8443/AbC123secretTOKENxyz": "https://….example:8443/…",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
	for host, want := range map[string]string{
		"eo3h0p8w4v9h6b5.m.pipedream.net": "….m.pipedream.net",
		"orders.example:443":              "orders.example:443",
		"[::1]:9000":                      "[::1]:9000",
		"10.0.0.7":                        "10.0.0.7",
	} {
		if got := RedactHost(host); got != want {
			t.Errorf("RedactHost(%q) = %q, want %q", host, got, want)
		}
	}
}
