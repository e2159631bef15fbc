package dispatcher

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/verify"
)

// A transport error names the host it failed on (a lookup, a
// certificate), and a capability URL can keep its token in the host name:
// the attempt's error (its record, its log line, the console) shows the
// host as RedactHost does. The lookup is Go's own resolver, failing as it
// does when no DNS server answers.
func TestTransportErrorsHideTokenHosts(t *testing.T) {
	t.Parallel()
	const token = "eo3h0p8w4v9h6b5"
	noDNS := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS server here")
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Resolver: noDNS}).DialContext}}
	k, _ := verify.ParseWebhookSecret(secretA)
	ep := Endpoint{Name: "capability", URL: "https://" + token + ".m.pipedream.net/hook", Keys: []verify.WebhookKey{k}, Timeout: 5 * time.Second}
	r := post(context.Background(), client, ep, delivery{userAgent: "sengo-relay/test", eventID: "evt_1", body: []byte(`{}`), now: time.Now()})
	if r.Err == nil {
		t.Fatal("a host that does not resolve was delivered to")
	}
	if got := r.Err.Error(); strings.Contains(got, token) || !strings.Contains(got, "….m.pipedream.net") {
		t.Errorf("attempt error %q: want the host shown as ….m.pipedream.net", got)
	}
}
