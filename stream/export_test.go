package stream

// SubscriberReplies is how many of the subscriber's requests to the
// relay's account wait for their answer (for tests).
func (e *Embedded) SubscriberReplies() int {
	subs, err := e.srv.LookupAccount(SubscriberAccount)
	if err != nil {
		return 0
	}
	return subs.NumPendingReverseResponses()
}
