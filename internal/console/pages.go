package console

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticRoot embed.FS

// staticFS serves /static/... from the embedded static folder.
var staticFS fs.FS = staticRoot

// pages holds one parsed template set per page (each with the layout).
type pages struct {
	t map[string]*template.Template
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"comma": comma,
	"rate": func(r float64) string {
		if r < 0 {
			return "—"
		}
		return strconv.FormatFloat(r, 'f', 1, 64) + "/s"
	},
	"dur": func(d time.Duration) string {
		if d == 0 {
			return "—"
		}
		return d.String()
	},
	"ms": func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
	},
	"add": func(a, b int) int { return a + b },
}

// comma writes n with thousands separators.
func comma(n any) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func loadPages() (*pages, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{t: map[string]*template.Template{}}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		p.t[base] = t
	}
	return p, nil
}

// view is what every page's template gets.
type view struct {
	Title    string
	Section  string // the navigation entry to highlight
	User     User
	Auth     bool
	CSRF     string
	Notice   string
	Data     any
	Prefix   string
	NATS     string
	Rendered time.Time
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, u User, code int, page, title, section string, data any) {
	t, ok := s.pages.t[page]
	if !ok {
		http.Error(w, "no such page template: "+page, http.StatusInternalServerError)
		return
	}
	v := view{Title: title, Section: section, User: u, Auth: s.cfg.Auth.Enabled(), CSRF: s.csrfToken(w, r), Data: data,
		Prefix: s.cfg.Topology.TasksStream(), NATS: s.cfg.Conn.NATS().ConnectedUrlRedacted(), Rendered: time.Now().UTC(),
		Notice: notices[r.URL.Query().Get("done")]}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		s.log.Error("console: render", "page", page, "err", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// notices are the fixed messages a redirect may ask a page to show.
var notices = map[string]string{
	"cancel-sent": "Cancel sent: the agent marks the task cancelled; a running task stops at its next step or checkpoint.",
	"job-cancel":  "Cancel requested: the job stops after the entries in hand (their marks are written first).",
}

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, u User, code int, msg string) {
	s.render(w, r, u, code, "error", http.StatusText(code), "", struct {
		Code int
		Msg  string
	}{code, msg})
}

// ---- overview and agents

type overviewData struct {
	Snap    *snapshotOfAgents
	Chart   chartView
	Open    []openBreaker
	Events  []Event
	Jobs    []jobView
	Reports bool // some agent reports its status
}

type openBreaker struct {
	Agent string
	breakerView
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request, u User) {
	snap := s.readAgents(r.Context())
	d := overviewData{Snap: snap, Chart: buildChart(s.rates.points(), snap.names()), Jobs: s.jobs.list()}
	for _, a := range snap.Agents {
		if a.Status != nil {
			d.Reports = true
		}
		for _, b := range a.OpenBreakers() {
			d.Open = append(d.Open, openBreaker{Agent: a.Name, breakerView: b})
		}
	}
	ev := s.hub.latest()
	d.Events = ev[:min(len(ev), 8)]
	if len(d.Jobs) > 5 {
		d.Jobs = d.Jobs[:5]
	}
	s.render(w, r, u, http.StatusOK, "overview", "Overview", "overview", d)
}

func (s *Server) agentsPage(w http.ResponseWriter, r *http.Request, u User) {
	s.render(w, r, u, http.StatusOK, "agents", "Agents", "agents", s.readAgents(r.Context()))
}

type agentData struct {
	Agent  agentView
	Recent []*dlq.Entry
	Err    string
	Tasks  int
}

func (s *Server) agentPage(w http.ResponseWriter, r *http.Request, u User) {
	name := r.PathValue("name")
	snap := s.readAgents(r.Context())
	a := snap.agent(name)
	if a == nil {
		s.renderError(w, r, u, http.StatusNotFound, "No agent named "+name+" is known here (no consumer, no queued task, no dead letter).")
		return
	}
	d := agentData{Agent: *a}
	// The newest dead letters of the agent among the stream's last 2,000.
	var after uint64
	if snap.DLQLast > 2000 {
		after = snap.DLQLast - 2000
	}
	if a.DLQ > 0 {
		err := s.store.Each(r.Context(), dlq.Filter{Agent: name, After: after, WithoutReplays: true}, func(e *dlq.Entry) error {
			d.Recent = append(d.Recent, e)
			if len(d.Recent) > 10 {
				d.Recent = d.Recent[1:]
			}
			return nil
		})
		if err == nil {
			err = s.store.FillReplays(r.Context(), d.Recent)
		}
		if err != nil {
			d.Err = errText(err)
		}
		for i, j := 0, len(d.Recent)-1; i < j; i, j = i+1, j-1 {
			d.Recent[i], d.Recent[j] = d.Recent[j], d.Recent[i]
		}
	}
	s.render(w, r, u, http.StatusOK, "agent", "Agent "+name, "agents", d)
}

// ---- dead letters

type dlqData struct {
	Q       dlqQuery
	Page    dlqPage
	Err     string
	Agents  []string
	Reasons []dlq.Reason
	// Total is the number of entries the agent filter selects (known
	// without a scan), -1 when other fields filter too.
	Total   int64
	Last    uint64
	Latest  string // link to the newest page
	First   string
	NextURL string
}

var allReasons = []dlq.Reason{dlq.ReasonMalformed, dlq.ReasonTooLarge, dlq.ReasonInvalid, dlq.ReasonBadTimestamp,
	dlq.ReasonExpired, dlq.ReasonUnknownType, dlq.ReasonPermanent, dlq.ReasonMaxAttempts, dlq.ReasonMaxDeliveries}

func (s *Server) dlqPage(w http.ResponseWriter, r *http.Request, u User) {
	q, err := parseDLQQuery(r.URL.Query())
	snap := s.readAgents(r.Context())
	d := dlqData{Q: q, Agents: snap.names(), Reasons: allReasons, Total: -1, Last: snap.DLQLast, First: q.link(0)}
	code := http.StatusOK
	if err != nil {
		d.Err, code = err.Error(), http.StatusBadRequest
	} else {
		d.Page, err = s.readDLQPage(r.Context(), q)
		if err != nil {
			d.Err, code = errText(err), http.StatusBadGateway
		}
	}
	if !q.Filtered() {
		if q.Agent == "" {
			d.Total = int64(snap.DLQTotal)
		} else if a := snap.agent(q.Agent); a != nil {
			d.Total = int64(a.DLQ)
		} else {
			d.Total = 0
		}
	}
	if d.Page.Next > 0 && d.Page.Next < snap.DLQLast {
		d.NextURL = q.link(d.Page.Next)
	}
	if snap.DLQLast > uint64(q.Limit) {
		d.Latest = q.link(snap.DLQLast - uint64(q.Limit))
	}
	s.render(w, r, u, code, "dlq", "Dead letters", "dlq", d)
}

type entryData struct {
	E         *dlq.Entry
	Envelope  string // the envelope as indented JSON, or ""
	Payload   string // its payload as indented JSON
	DecodeErr string
	Raw       string // the body, when it is no envelope (shown as text)
	Headers   [][2]string
	History   []AuditRecord
	Type      string
}

func (s *Server) entryPage(w http.ResponseWriter, r *http.Request, u User) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		s.renderError(w, r, u, http.StatusBadRequest, "Not an entry id: "+r.PathValue("seq"))
		return
	}
	err = s.connected()
	var e *dlq.Entry
	if err == nil {
		e, err = s.store.Get(r.Context(), seq)
	}
	if err != nil {
		code := http.StatusBadGateway
		if strings.Contains(err.Error(), dlq.ErrNotFound.Error()) {
			code = http.StatusNotFound
		}
		s.renderError(w, r, u, code, errText(err))
		return
	}
	d := entryData{E: e, History: s.audit.about(seq), Type: taskType(s.cfg.Topology, e.Subject)}
	var env envelope.Envelope
	if err := envelope.Unmarshal(e.Data, &env); err != nil {
		d.DecodeErr = err.Error()
		d.Raw = strconv.Quote(string(e.Data[:min(len(e.Data), 64<<10)]))
	} else {
		if b, err := json.MarshalIndent(env, "", "  "); err == nil {
			d.Envelope = string(b)
		}
		if len(env.Payload) > 0 {
			if p, err := envelope.PayloadJSON(env.Payload); err == nil {
				var buf bytes.Buffer
				if json.Indent(&buf, p, "", "  ") == nil {
					d.Payload = buf.String()
				} else {
					d.Payload = string(p)
				}
			}
		}
	}
	keys := make([]string, 0, len(e.Header))
	for k := range e.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range e.Header[k] {
			d.Headers = append(d.Headers, [2]string{k, v})
		}
	}
	s.render(w, r, u, http.StatusOK, "entry", fmt.Sprintf("Dead letter %d", seq), "dlq", d)
}

// ---- replay and purge

type confirmData struct {
	Q        dlqQuery
	Hidden   url.Values // the selection, carried by the form
	UpTo     uint64
	Would    int
	Already  int
	Count    int
	Agents   []string
	Err      string
	Rate     string
	Target   string
	Force    bool
	Typed    string
	Selected bool
}

// selection reads what the list's form selected: check boxes (id=...)
// or, with scope=all, the filter.
func selection(v url.Values) (dlqQuery, error) {
	q, err := parseDLQQuery(v)
	if err != nil {
		return q, err
	}
	if v.Get("scope") == "all" {
		q.IDs = nil
		return q, nil
	}
	if len(q.IDs) == 0 {
		return q, fmt.Errorf("no entries selected: tick some, or use the buttons for all that match the filter")
	}
	return q, nil
}

func (q dlqQuery) hidden() url.Values {
	v := q.Values()
	v.Del("n")
	if len(q.IDs) > 0 {
		ids := make([]string, len(q.IDs))
		for i, id := range q.IDs {
			ids[i] = strconv.FormatUint(id, 10)
		}
		v.Set("id", strings.Join(ids, ","))
	} else {
		v.Set("scope", "all")
	}
	return v
}

func (s *Server) replayPreview(w http.ResponseWriter, r *http.Request, u User) {
	q, err := selection(r.URL.Query())
	if err != nil {
		s.renderError(w, r, u, http.StatusBadRequest, err.Error())
		return
	}
	snap := s.readAgents(r.Context())
	d := confirmData{Q: q, Hidden: q.hidden(), UpTo: snap.DLQLast, Agents: snap.names(), Selected: len(q.IDs) > 0}
	d.Would, d.Already, err = s.dryRun(r.Context(), q, d.UpTo)
	if err != nil {
		d.Err = errText(err)
	}
	s.render(w, r, u, http.StatusOK, "replay", "Replay dead letters", "dlq", d)
}

func (s *Server) replayStart(w http.ResponseWriter, r *http.Request, u User) {
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, u, http.StatusBadRequest, err.Error())
		return
	}
	q, err := selection(r.PostForm)
	if err != nil {
		s.renderError(w, r, u, http.StatusBadRequest, err.Error())
		return
	}
	spec := replaySpec{q: q, force: r.PostFormValue("force") != "", target: strings.TrimSpace(r.PostFormValue("target"))}
	var errs []string
	if spec.upTo, err = strconv.ParseUint(r.PostFormValue("up_to"), 10, 64); err != nil {
		errs = append(errs, "the form lost its bound (up_to): start again from the list")
	}
	if v := strings.TrimSpace(r.PostFormValue("rate")); v != "" {
		if spec.rate, err = strconv.ParseFloat(v, 64); err != nil || spec.rate < 0 || spec.rate > 1e6 || spec.rate != spec.rate {
			errs = append(errs, "rate: want a number of replays per second between 0 (no limit) and 1000000")
		}
	}
	if spec.target != "" && !validName(spec.target) {
		errs = append(errs, "target agent: letters, digits, '-' and '_' only")
	}
	would, _ := strconv.Atoi(r.PostFormValue("would"))
	already, _ := strconv.Atoi(r.PostFormValue("already"))
	if len(errs) > 0 {
		d := confirmData{Q: q, Hidden: q.hidden(), UpTo: spec.upTo, Would: would, Already: already, Err: strings.Join(errs, "; "),
			Rate: r.PostFormValue("rate"), Target: spec.target, Force: spec.force, Selected: len(q.IDs) > 0}
		s.render(w, r, u, http.StatusBadRequest, "replay", "Replay dead letters", "dlq", d)
		return
	}
	expected := would
	if spec.force {
		expected += already
	}
	opts := []string{}
	if spec.rate > 0 {
		opts = append(opts, fmt.Sprintf("rate %g/s", spec.rate))
	}
	if spec.target != "" {
		opts = append(opts, "to agent "+spec.target)
	}
	if spec.force {
		opts = append(opts, "forced")
	}
	j := &Job{Kind: "replay", User: u, Remote: r.RemoteAddr, Target: q.Describe(), Options: strings.Join(opts, ", "), Expected: expected}
	s.startJob(j, func() { s.runReplay(j, spec) })
	http.Redirect(w, r, "/jobs/"+strconv.Itoa(j.ID), http.StatusSeeOther)
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (s *Server) purgePreview(w http.ResponseWriter, r *http.Request, u User) {
	q, err := selection(r.URL.Query())
	if err != nil {
		s.renderError(w, r, u, http.StatusBadRequest, err.Error())
		return
	}
	snap := s.readAgents(r.Context())
	d := confirmData{Q: q, Hidden: q.hidden(), UpTo: snap.DLQLast, Selected: len(q.IDs) > 0}
	if d.Count, err = s.count(r.Context(), q, d.UpTo); err != nil {
		d.Err = errText(err)
	}
	s.render(w, r, u, http.StatusOK, "purge", "Purge dead letters", "dlq", d)
}

func (s *Server) purgeStart(w http.ResponseWriter, r *http.Request, u User) {
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, u, http.StatusBadRequest, err.Error())
		return
	}
	q, err := selection(r.PostForm)
	if err != nil {
		s.renderError(w, r, u, http.StatusBadRequest, err.Error())
		return
	}
	upTo, err1 := strconv.ParseUint(r.PostFormValue("up_to"), 10, 64)
	count, err2 := strconv.Atoi(r.PostFormValue("count"))
	typed := strings.TrimSpace(r.PostFormValue("confirm"))
	if err1 != nil || err2 != nil || typed != strconv.Itoa(count) {
		d := confirmData{Q: q, Hidden: q.hidden(), UpTo: upTo, Count: count, Typed: typed, Selected: len(q.IDs) > 0,
			Err: fmt.Sprintf("Type %d (the number of entries) to confirm; nothing was purged.", count)}
		s.render(w, r, u, http.StatusBadRequest, "purge", "Purge dead letters", "dlq", d)
		return
	}
	j := &Job{Kind: "purge", User: u, Remote: r.RemoteAddr, Target: q.Describe(), Expected: count}
	s.startJob(j, func() { s.runPurge(j, q, upTo) })
	http.Redirect(w, r, "/jobs/"+strconv.Itoa(j.ID), http.StatusSeeOther)
}

// ---- jobs

func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request, u User) {
	s.render(w, r, u, http.StatusOK, "jobs", "Jobs", "jobs", s.jobs.list())
}

func (s *Server) job(w http.ResponseWriter, r *http.Request, u User) *Job {
	id, err := strconv.Atoi(r.PathValue("id"))
	j := s.jobs.get(id)
	if err != nil || j == nil {
		s.renderError(w, r, u, http.StatusNotFound, "No job "+r.PathValue("id")+" in this console (jobs are kept until it stops).")
		return nil
	}
	return j
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request, u User) {
	if j := s.job(w, r, u); j != nil {
		s.render(w, r, u, http.StatusOK, "job", fmt.Sprintf("Job %d", j.ID), "jobs", j.view())
	}
}

func (s *Server) jobCancel(w http.ResponseWriter, r *http.Request, u User) {
	j := s.job(w, r, u)
	if j == nil {
		return
	}
	j.requestCancel()
	s.audit.add(AuditRecord{User: u.Name, Role: u.Role, Remote: r.RemoteAddr, Action: "cancel_job", Target: fmt.Sprintf("job %d (%s %s)", j.ID, j.Kind, j.Target), Outcome: "requested", Job: j.ID})
	http.Redirect(w, r, fmt.Sprintf("/jobs/%d?done=job-cancel", j.ID), http.StatusSeeOther)
}

// ---- live and audit

func (s *Server) livePage(w http.ResponseWriter, r *http.Request, u User) {
	s.render(w, r, u, http.StatusOK, "live", "Live", "live", s.hub.latest())
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request, u User) {
	s.render(w, r, u, http.StatusOK, "audit", "Audit log", "audit", struct {
		Records []AuditRecord
		File    string
	}{s.audit.latest(500), s.cfg.AuditFile})
}
