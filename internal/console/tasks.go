package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/snapshot"
)

// snapshots opens the snapshot store on first use (a console whose user
// may not read snapshots still serves every other page).
func (s *Server) snapshots(ctx context.Context) (*snapshot.KV, error) {
	if err := s.connected(); err != nil {
		return nil, err
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if s.snaps != nil {
		return s.snaps, nil
	}
	kv, err := snapshot.NewKV(s.cfg.Conn.JetStream(), s.cfg.Topology)
	if err != nil {
		return nil, err
	}
	s.snaps = kv
	return kv, nil
}

type tasksData struct {
	Agent, Status string
	Agents        []string
	Statuses      []snapshot.Status
	Tasks         []*snapshot.Snapshot
	Total         int
	Errs          []string
}

var allStatuses = []snapshot.Status{snapshot.Submitted, snapshot.Working, snapshot.InputRequired, snapshot.Completed, snapshot.Failed, snapshot.Cancelled}

const maxTasksShown = 500

func (s *Server) tasksPage(w http.ResponseWriter, r *http.Request, u User) {
	q := r.URL.Query()
	d := tasksData{Agent: q.Get("agent"), Status: q.Get("status"), Statuses: allStatuses}
	snap := s.readAgents(r.Context())
	d.Agents = snap.names()
	agents := d.Agents
	if d.Agent != "" {
		agents = []string{d.Agent}
	}
	kv, err := s.snapshots(r.Context())
	if err != nil {
		d.Errs = append(d.Errs, errText(err))
	}
	for _, a := range agents {
		if kv == nil {
			break
		}
		list, err := kv.List(r.Context(), a)
		if err != nil {
			d.Errs = append(d.Errs, fmt.Sprintf("agent %s: %s", a, errText(err)))
			continue
		}
		for _, t := range list {
			if d.Status == "" || string(t.Status) == d.Status {
				d.Tasks = append(d.Tasks, t)
			}
		}
	}
	d.Total = len(d.Tasks)
	sort.Slice(d.Tasks, func(i, j int) bool { return d.Tasks[i].Updated.After(d.Tasks[j].Updated) })
	if len(d.Tasks) > maxTasksShown {
		d.Tasks = d.Tasks[:maxTasksShown]
	}
	s.render(w, r, u, http.StatusOK, "tasks", "Tasks", "tasks", d)
}

type checkpoint struct {
	*snapshot.Snapshot
	State string // decoded to JSON
}

type taskData struct {
	Agent, ID string
	Latest    *checkpoint
	History   []checkpoint
	Err       string
	CanCancel bool
}

func stateJSON(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	p, err := envelope.PayloadJSON(b)
	if err != nil {
		return fmt.Sprintf("(state does not decode: %v)", err)
	}
	var buf bytes.Buffer
	if json.Indent(&buf, p, "", "  ") != nil {
		return string(p)
	}
	return buf.String()
}

func (s *Server) taskPage(w http.ResponseWriter, r *http.Request, u User) {
	d := taskData{Agent: r.PathValue("agent"), ID: r.PathValue("id")}
	kv, err := s.snapshots(r.Context())
	if err == nil {
		var hist []*snapshot.Snapshot
		hist, err = kv.History(r.Context(), d.Agent, d.ID, 64)
		for _, h := range hist {
			d.History = append(d.History, checkpoint{h, stateJSON(h.State)})
		}
	}
	code := http.StatusOK
	switch {
	case errors.Is(err, snapshot.ErrNotFound):
		d.Err, code = "This task has no snapshot: it never checkpointed, it finished (finished tasks leave none), or its snapshot expired.", http.StatusNotFound
	case errors.Is(err, snapshot.ErrInvalid):
		d.Err, code = err.Error(), http.StatusBadRequest
	case err != nil:
		d.Err, code = errText(err), http.StatusBadGateway
	}
	if len(d.History) > 0 {
		d.Latest = &d.History[0]
		d.CanCancel = !d.Latest.Status.Terminal()
	}
	s.render(w, r, u, code, "task", "Task "+d.ID, "tasks", d)
}

// taskCancel sends the agent a task.cancel for the task, as `agent send
// --type task.cancel` does; the agent marks its snapshot cancelled.
func (s *Server) taskCancel(w http.ResponseWriter, r *http.Request, u User) {
	agent, id := r.PathValue("agent"), r.PathValue("id")
	rec := AuditRecord{User: u.Name, Role: u.Role, Remote: r.RemoteAddr, Action: "cancel_task", Target: "task " + id + " of agent " + agent, Count: 1}
	if err := bus.ValidateName(agent); err != nil {
		rec.Outcome = "failed: " + err.Error()
		s.audit.add(rec)
		s.renderError(w, r, u, http.StatusBadRequest, err.Error())
		return
	}
	env, err := envelope.New("console", agent, envelope.TaskCancel, nil)
	if err == nil {
		env.TaskID = id
		_, err = bus.NewPublisher(s.cfg.Conn.JetStream()).PublishEnvelope(r.Context(), s.cfg.Topology.TaskSubject(agent, envelope.TaskCancel), env)
	}
	if err != nil {
		rec.Outcome = "failed: " + err.Error()
		s.audit.add(rec)
		s.renderError(w, r, u, http.StatusBadGateway, "The cancel could not be sent: "+errText(err))
		return
	}
	rec.Outcome = "sent"
	s.audit.add(rec)
	s.hub.publish(Event{Kind: "audit", Text: fmt.Sprintf("%s sent a cancel for task %s of agent %s", u.Name, id, agent), Link: "/tasks/" + agent + "/" + url.PathEscape(id)})
	http.Redirect(w, r, "/tasks/"+url.PathEscape(agent)+"/"+url.PathEscape(id)+"?done=cancel-sent", http.StatusSeeOther)
}
