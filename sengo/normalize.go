package sengo

import (
	"time"

	"github.com/sengo-relay/sengo-relay/event"
)

// Event maps the transaction to the normalized event for project. previous
// is the status the transaction had before ("" on the first sighting), at is
// when the relay accepted the change, and confirmed says whether SenGo's API
// agreed with the notification.
func (t Transaction) Event(project string, previous event.Status, at time.Time, confirmed bool) event.Event {
	var prev *event.Status
	if previous != "" {
		prev = &previous
	}
	return event.Event{
		SpecVersion:     event.SpecVersion,
		ID:              event.ID(project, t.ID, t.Status),
		Source:          event.Source(project),
		Type:            event.Type(t.Status),
		Subject:         t.MerchantRef,
		Time:            at.UTC(),
		DataContentType: "application/json",
		Data: event.Data{
			TransactionID:  t.ID,
			MerchantRef:    t.MerchantRef,
			Status:         t.Status,
			PreviousStatus: prev,
			Product:        t.Product,
			Channel:        t.Channel,
			Amount:         t.Amount,
			Fee:            t.Fee,
			TotalAmount:    t.TotalAmount,
			FeePayer:       t.FeePayer,
			Currency:       event.Currency,
			PaymentCode:    t.PaymentCode,
			VANumber:       t.VANumber,
			ExpiredAt:      t.ExpiredDate,
			PaidAt:         t.PaidDate,
			Confirmed:      confirmed,
			Raw:            t.Raw,
		},
	}
}
