package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/verify"
)

// controls registers the sandbox's own endpoints (no authentication: the
// sandbox is a local development tool; keep it on loopback).
func (s *Server) controls() {
	for action, to := range map[string]event.Status{"pay": event.StatusSuccess, "expire": event.StatusExpired, "fail": event.StatusFailed} {
		s.mux.HandleFunc("POST /sandbox/transactions/{id}/"+action, func(w http.ResponseWriter, r *http.Request) {
			obj, err := s.Transition(r.PathValue("id"), to)
			if err != nil {
				ae := err.(*apiErr)
				writeEnvelope(w, ae.status, ae.code, map[string]string{"message": ae.msg})
				return
			}
			writeEnvelope(w, 200, "success", obj)
		})
	}
	s.mux.HandleFunc("GET /sandbox/transactions", func(w http.ResponseWriter, r *http.Request) {
		writeEnvelope(w, 200, "success", s.Transactions())
	})
	s.mux.HandleFunc("GET /sandbox/callbacks", func(w http.ResponseWriter, r *http.Request) {
		writeEnvelope(w, 200, "success", s.Sent())
	})
	s.mux.HandleFunc("GET /sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		writeEnvelope(w, 200, "success", controlState{Callbacks: s.policy, Faults: s.faults})
	})
	s.mux.HandleFunc("POST /sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		var c controlState
		if err := decodeControl(r, &c); err != nil {
			writeEnvelope(w, 422, sengo.CodeRequestInvalid, map[string]string{"message": err.Error()})
			return
		}
		s.SetCallbacks(c.Callbacks)
		s.SetFaults(c.Faults)
		writeEnvelope(w, 200, "success", c)
	})
	s.mux.HandleFunc("POST /sandbox/projects", func(w http.ResponseWriter, r *http.Request) {
		var p Project
		if err := decodeControl(r, &p); err != nil {
			writeEnvelope(w, 422, sengo.CodeRequestInvalid, map[string]string{"message": err.Error()})
			return
		}
		if p.Key == "" || p.Token == "" {
			writeEnvelope(w, 422, sengo.CodeRequestInvalid, map[string]string{"message": "key and token are required"})
			return
		}
		s.AddProject(p)
		writeEnvelope(w, 200, "success", map[string]string{"key": p.Key})
	})
}

// decodeControl reads one JSON object of a control request; the error says
// which field was wrong and why (a type mismatch, an unknown field).
func decodeControl(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("field %s: want a JSON %s, got %s", te.Field, te.Type, te.Value)
		}
		return fmt.Errorf("body: %v", err)
	}
	return nil
}

type controlState struct {
	Callbacks CallbackPolicy `json:"callbacks"`
	Faults    Faults         `json:"faults"`
}

// AddProject adds or replaces a project.
func (s *Server) AddProject(p Project) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Projects[p.Key] = &p
	s.saveLocked()
}

// SetCallbacks changes how callbacks are sent.
func (s *Server) SetCallbacks(p CallbackPolicy) { s.mu.Lock(); s.policy = p; s.mu.Unlock() }

// SetFaults changes the injected API faults.
func (s *Server) SetFaults(f Faults) { s.mu.Lock(); s.faults = f; s.mu.Unlock() }

// Transactions returns every transaction, oldest first.
func (s *Server) Transactions() []object {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*tx
	for _, t := range s.st.Txs {
		all = append(all, t)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Created.Before(all[j].Created) })
	out := []object{}
	for _, t := range all {
		out = append(out, t.Object)
	}
	return out
}

// Sent returns every callback attempt so far.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent{}, s.sent...)
}

// Transition moves a pending transaction (by id, or by its merchantRef
// when only one has it) to a final status, settles the
// balance and sends the callback.
func (s *Server) Transition(id string, to event.Status) (any, error) {
	s.mu.Lock()
	t, ok := s.st.Txs[id]
	if !ok { // the merchant's own reference works too, when one transaction has it
		var found []*tx
		for _, c := range s.st.Txs {
			if c.Object.MerchantRef == id {
				found = append(found, c)
			}
		}
		switch len(found) {
		case 0:
			s.mu.Unlock()
			return nil, fail(404, sengo.CodeTransactionNotFound, "no transaction with id or merchantRef %s", id)
		case 1:
			t = found[0]
		default:
			s.mu.Unlock()
			return nil, fail(409, sengo.CodeRequestInvalid, "%d transactions have merchantRef %s; give the id", len(found), id)
		}
	}
	if t.Object.Status != string(event.StatusPending) {
		s.mu.Unlock()
		return nil, fail(409, sengo.CodeRequestInvalid, "transaction is %s, not pending", t.Object.Status)
	}
	s.finishLocked(t, to)
	obj := t.Object
	s.saveLocked()
	s.mu.Unlock()
	s.sendCallback(t.CallbackURL, obj)
	return obj, nil
}

// finishLocked applies a final status and its effect on the balance.
func (s *Server) finishLocked(t *tx, to event.Status) {
	now := s.now()
	t.Object.Status = string(to)
	p := s.st.Projects[t.Project]
	switch {
	case to == event.StatusSuccess && t.Kind != "disbursement":
		t.Object.PaidDate = stamp(now)
		net := t.Object.Amount
		if t.Object.FeePayer == "merchant" {
			net -= t.Object.Fee
		}
		if p != nil {
			p.Active += net
		}
	case to == event.StatusSuccess:
		t.Object.PaidDate = stamp(now)
	case t.Kind == "disbursement" && p != nil:
		p.Active += t.Object.Amount // the held amount comes back
	}
}

// ExpireDue expires pending transactions past their expiredDate and sends
// their callbacks. The sandbox does this every second and before reads.
func (s *Server) ExpireDue() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireDueLocked()
}

func (s *Server) expireDueLocked() {
	now := s.now()
	changed := false
	for _, t := range s.st.Txs {
		if t.Object.Status != string(event.StatusPending) || t.Object.ExpiredDate == nil {
			continue
		}
		if exp, err := time.Parse(time.RFC3339, *t.Object.ExpiredDate); err == nil && now.After(exp) {
			s.finishLocked(t, event.StatusExpired)
			s.sendCallback(t.CallbackURL, t.Object) // spawns; never blocks on s.mu
			changed = true
		}
	}
	if changed {
		s.saveLocked()
	}
}

// sendCallback posts the envelope of obj to url in the background,
// following the callback policy. It never holds s.mu while sending.
func (s *Server) sendCallback(url string, obj object) {
	if url == "" {
		return
	}
	s.callbacks.Add(1)
	go func() {
		defer s.callbacks.Done()
		s.mu.Lock()
		p := s.policy
		s.mu.Unlock()
		body, _ := verify.PHPJSON(envelope{ResponseCode: 200, ResponseMessage: "success", ResponseData: obj})
		if p.Drop {
			s.log(Sent{TransactionID: obj.ID, Status: obj.Status, URL: url, Dropped: true, At: s.now()})
			return
		}
		for copy := 0; copy <= p.Duplicates; copy++ {
			for attempt := 1; attempt <= p.Retries+1; attempt++ {
				status, err := s.post(url, body)
				rec := Sent{TransactionID: obj.ID, Status: obj.Status, URL: url, Attempt: attempt, HTTPStatus: status, At: s.now()}
				if err != nil {
					rec.Error = err.Error()
				}
				s.log(rec)
				if err == nil && status >= 200 && status < 300 {
					break
				}
				select {
				case <-s.ctx.Done():
					return
				case <-time.After(time.Duration(p.RetryDelay)):
				}
			}
		}
	}()
}

func (s *Server) post(url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sengo-sandbox")
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (s *Server) log(rec Sent) {
	s.mu.Lock()
	s.sent = append(s.sent, rec)
	s.mu.Unlock()
}
