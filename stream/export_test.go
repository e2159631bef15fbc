package stream

import "time"

// SubscriberReplies is how many of the subscriber's requests to the
// relay's account wait for their answer (for tests).
func (e *Embedded) SubscriberReplies() int { return e.srv.GlobalAccount().NumPendingAllResponses() }

// SetReplyWaits sets how long the subscriber's pulls and other requests
// keep their entries (for tests), until the test ends.
func SetReplyWaits(t interface{ Cleanup(func()) }, pull, answer time.Duration) {
	oldPull, oldAnswer, oldGuard := pullWait, answerWait, guardAnswerWait
	pullWait, answerWait, guardAnswerWait = pull, answer, answer
	t.Cleanup(func() { pullWait, answerWait, guardAnswerWait = oldPull, oldAnswer, oldGuard })
}

// KeptAge is keptAge: the max_age provisioning gives spec's stream, and
// why it keeps the one the stream has (for tests).
var KeptAge = keptAge
