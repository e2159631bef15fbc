package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/sengo-relay/sengo-relay/receiver"
)

// What one answer may make the server hold of the notifications it
// shows. Anyone can post a notification (up to http.max_body_bytes, 16
// MiB at most), and encoding/json escapes each '<' into six bytes: a
// list that answered every quarantined body whole, 32 MiB of them, built
// one buffer of hundreds of megabytes.
const (
	// maxExcerpt bounds each body a list or a story shows, in bytes of
	// its JSON. GET /admin/quarantine/{seq} shows one whole.
	maxExcerpt = 4 << 10
	// maxQuarantineAnswer bounds the body of GET /admin/quarantine: the
	// newest notifications that fit are listed.
	maxQuarantineAnswer = 8 << 20
	// maxStoryBodies bounds the bodies of one story, encoded; past it a
	// body is left out (an empty excerpt, marked truncated).
	maxStoryBodies = 2 << 20
	// maxQuarantineListed is how many notifications a listing reads, as
	// receiver.ListQuarantine does: with no filter the newest this many,
	// else the first this many that match.
	maxQuarantineListed = 10000
)

// HeaderLeftOut names, on a list shortened to stay within its bound, how
// many older records it read and left out.
const HeaderLeftOut = "Sengo-Left-Out"

// excerpt is body (JSON) as a list or a story shows it: body itself when
// it is at most max bytes, else a JSON string of its first max bytes (cut
// before a character that does not fit); cut reports the latter.
func excerpt(body json.RawMessage, max int) (shown json.RawMessage, cut bool) {
	if len(body) <= max {
		return slices.Clone(body), false // not the message it came from, which may be far larger
	}
	n := max
	for n > 0 && n > max-utf8.UTFMax && !utf8.RuneStart(body[n]) {
		n--
	}
	shown, _ = json.Marshal(string(body[:n]))
	return shown, true
}

// bodyBudget is what the bodies of one answer may still take, encoded.
type bodyBudget struct{ left int }

// fit is an excerpt as the answer shows it: itself when it fits in what
// is left, else an empty string (a body left out, so cut).
func (b *bodyBudget) fit(shown json.RawMessage, cut bool) (json.RawMessage, bool) {
	enc, err := json.Marshal(shown) // as the answer's encoder writes it: compacted, HTML escaped
	if err == nil && len(enc) <= b.left {
		b.left -= len(enc)
		return shown, cut
	}
	return json.RawMessage(`""`), true
}

// bodyText is a body as the console shows it: an excerpt unquoted, with
// how much of it is shown.
func bodyText(shown json.RawMessage, cut bool, size int) string {
	if !cut {
		return string(shown)
	}
	var s string
	_ = json.Unmarshal(shown, &s)
	if s == "" {
		return fmt.Sprintf("(left out: %d bytes; the page shows at most %d MiB of bodies)", size, maxStoryBodies>>20)
	}
	return fmt.Sprintf("%s… (the first %d of %d bytes)", s, len(s), size)
}

// quarantineView is a quarantined notification as a list or a story
// shows it: its bodies as excerpts, with their whole sizes.
type quarantineView struct {
	receiver.QuarantineEntry
	NotificationBytes     int  `json:"notificationBytes"`
	NotificationTruncated bool `json:"notificationTruncated"`
	SenGoBytes            int  `json:"sengoBytes,omitempty"`
	SenGoTruncated        bool `json:"sengoTruncated,omitempty"`
}

func viewQuarantined(e receiver.QuarantineEntry) quarantineView {
	v := quarantineView{QuarantineEntry: e, NotificationBytes: len(e.Notification), SenGoBytes: len(e.SenGo)}
	v.Notification, v.NotificationTruncated = excerpt(e.Notification, maxExcerpt)
	if e.SenGo != nil {
		v.SenGo, v.SenGoTruncated = excerpt(e.SenGo, maxExcerpt)
	}
	return v
}

// NotificationText is the notification as the console shows it.
func (v quarantineView) NotificationText() string {
	return bodyText(v.Notification, v.NotificationTruncated, v.NotificationBytes)
}

// SenGoText is SenGo's version as the console shows it.
func (v quarantineView) SenGoText() string { return bodyText(v.SenGo, v.SenGoTruncated, v.SenGoBytes) }

// notificationView is a notification of a story: its body as an
// excerpt, with its whole size.
type notificationView struct {
	receiver.Notification
	BodyBytes     int  `json:"bodyBytes"`
	BodyTruncated bool `json:"bodyTruncated"`
}

func viewNotification(n receiver.Notification) notificationView {
	v := notificationView{Notification: n, BodyBytes: len(n.Body)}
	v.Body, v.BodyTruncated = excerpt(n.Body, maxExcerpt)
	return v
}

// BodyText is the body as the console shows it.
func (v notificationView) BodyText() string { return bodyText(v.Body, v.BodyTruncated, v.BodyBytes) }

// listedQuarantine is one notification of a listing: its view, and the
// view encoded as the API answers it.
type listedQuarantine struct {
	view quarantineView
	json []byte
}

// listQuarantine reads the quarantined notifications f selects (as
// receiver.ListQuarantine selects them), oldest first, each body cut to
// an excerpt, and keeps the newest whose encodings fit in
// maxQuarantineAnswer; left is how many older ones it read and left out.
func (s *Server) listQuarantine(ctx context.Context, f receiver.QuarantineFilter) (kept []listedQuarantine, left int, err error) {
	var (
		held, seen int
		encErr     error
	)
	err = receiver.EachQuarantined(ctx, s.cfg.JetStream, f, func(e receiver.QuarantineEntry) bool {
		v := viewQuarantined(e)
		b, err := json.Marshal(v)
		if err != nil {
			encErr = err
			return false
		}
		kept = append(kept, listedQuarantine{view: v, json: b})
		// Each item takes its comma, and the list its brackets.
		held += len(b) + 1
		for held+2 > maxQuarantineAnswer && len(kept) > 0 {
			held -= len(kept[0].json) + 1
			kept[0] = listedQuarantine{}
			kept = kept[1:]
			left++
		}
		seen++
		return seen < maxQuarantineListed
	})
	if err == nil {
		err = encErr
	}
	return kept, left, err
}
