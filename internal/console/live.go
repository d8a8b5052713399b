package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Event is one thing that happened, as the live page and the job pages
// show it.
type Event struct {
	ID   uint64    `json:"id"`
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // dead_letter, replay, breaker, job, audit
	Text string    `json:"text"`
	Link string    `json:"link,omitempty"`
	// Job and its progress, for kind "job".
	Job     int  `json:"job,omitempty"`
	Done    bool `json:"done,omitempty"`
	Percent int  `json:"percent,omitempty"`
}

// hub fans events out to the live page's subscribers and keeps the
// latest ones for a page loaded later.
type hub struct {
	mu     sync.Mutex
	next   uint64
	recent []Event
	subs   map[chan Event]struct{}
	closed bool
}

func newHub() *hub { return &hub{subs: map[chan Event]struct{}{}} }

const recentEvents = 200

// publish stamps e and sends it to every subscriber; a subscriber too
// slow to take it misses it (its page shows the latest on reload).
func (h *hub) publish(e Event) {
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	e.ID = h.next
	if e.Kind != "job" {
		h.recent = append(h.recent, e)
		if len(h.recent) > recentEvents {
			h.recent = h.recent[len(h.recent)-recentEvents:]
		}
	}
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// latest returns the recent events, newest first.
func (h *hub) latest() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Event, len(h.recent))
	for i, e := range h.recent {
		out[len(h.recent)-1-i] = e
	}
	return out
}

func (h *hub) subscribe() (chan Event, func()) {
	ch := make(chan Event, 256)
	h.mu.Lock()
	if h.closed {
		close(ch)
	} else {
		h.subs[ch] = struct{}{}
	}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
	}
}

// close ends every subscription (their streams end).
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}

// serveEvents streams events as Server-Sent Events until the client goes
// away or the console stops. ?job=N sends only that job's events.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	var job int
	if v := r.URL.Query().Get("job"); v != "" {
		if _, err := fmt.Sscan(v, &job); err != nil {
			http.Error(w, "bad job", http.StatusBadRequest)
			return
		}
	}
	ch, unsubscribe := s.hub.subscribe()
	defer unsubscribe()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": jetagent console events\n\n")
	if j := s.jobs.get(job); j != nil {
		// The job's state now, in case it ended before this stream began.
		v := j.view()
		b, _ := json.Marshal(Event{Kind: "job", Job: j.ID, Done: !v.Running(), Percent: v.Percent, Text: v.Summary() + " — " + v.State, At: time.Now().UTC()})
		fmt.Fprintf(w, "event: job\ndata: %s\n\n", b)
	}
	fl.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
			fl.Flush()
		case e, ok := <-ch:
			if !ok {
				return
			}
			if job != 0 && e.Job != job {
				continue
			}
			if job == 0 && e.Kind == "job" {
				continue
			}
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.ID, e.Kind, b)
			fl.Flush()
		}
	}
}
