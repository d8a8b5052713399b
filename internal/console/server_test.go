package console

import (
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"
)

func TestOffLoopbackWithoutAuthIsRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8090", "[::]:8090", "192.0.2.7:80", ":8090"} {
		if err := (Config{Addr: addr}).Check(); !errors.Is(err, ErrNoAuth) {
			t.Errorf("%s without auth: %v, want ErrNoAuth", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:8090", "localhost:0", "[::1]:8090", ""} {
		if err := (Config{Addr: addr}).Check(); err != nil {
			t.Errorf("%s without auth: %v, want it allowed", addr, err)
		}
	}
	var auth Auth
	if err := auth.AddToken("s3cret"); err != nil {
		t.Fatal(err)
	}
	if err := (Config{Addr: "0.0.0.0:8090", Auth: auth}).Check(); err != nil {
		t.Errorf("0.0.0.0 with a token: %v", err)
	}
}

func TestCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var a Auth
	// A bcrypt hash, in the "$2y$" form htpasswd -nbB writes.
	hash, err := bcrypt.GenerateFromPassword([]byte("pw-alice"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	good := write("users", "# console users\nalice:operator:$2y$"+string(hash[4:])+"\nbob:viewer:pw-bob\n")
	if err := a.LoadCredentialsFile(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"alice:admin:x\n", "alice-no-secret:operator\n", "# nothing\n"} {
		var b Auth
		err := b.LoadCredentialsFile(write("bad", bad))
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), "x\n") {
			t.Errorf("the error shows the file's content: %v", err)
		}
	}
	req := func(user, pw string) *http.Request {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pw)
		return r
	}
	if u, ok := a.authenticate(req("bob", "pw-bob")); !ok || u.Role != Viewer || u.CanAct() {
		t.Errorf("bob = %+v, %v", u, ok)
	}
	if _, ok := a.authenticate(req("bob", "wrong")); ok {
		t.Error("a wrong password was accepted")
	}
	if u, ok := a.authenticate(req("alice", "pw-alice")); !ok || !u.CanAct() {
		t.Errorf("alice (bcrypt) = %+v, %v", u, ok)
	}
	if _, ok := a.authenticate(req("alice", "pw-bob")); ok {
		t.Error("bob's password let alice in")
	}
	a.ReadOnly = true
	if u, _ := a.authenticate(req("bob", "pw-bob")); u.CanAct() {
		t.Error("--read-only left an operator")
	}
}

// actions are every POST route, with a form that would be valid.
func actions(f *fixture, seq uint64) map[string]url.Values {
	s := strconv.FormatUint(seq, 10)
	return map[string]url.Values{
		"/dlq/replay":           {"id": {s}, "up_to": {s}, "would": {"1"}},
		"/dlq/purge":            {"id": {s}, "up_to": {s}, "count": {"1"}, "confirm": {"1"}},
		"/jobs/1/cancel":        {},
		"/tasks/echo/t1/cancel": {},
	}
}

func TestViewerGets403OnEveryAction(t *testing.T) {
	var auth Auth
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("op:operator:pw-op\nview:viewer:pw-view\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := auth.LoadCredentialsFile(users); err != nil {
		t.Fatal(err)
	}
	f := startConsole(t, auth)
	seq := f.deadLetter(t, "echo", 1, dlq.ReasonPermanent, "x", "boom")

	if code, _ := f.client(t, "", "").get("/"); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", code)
	}
	if code, _ := f.client(t, "view", "wrong").get("/dlq"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", code)
	}
	viewer := f.client(t, "view", "pw-view")
	for _, p := range []string{"/", "/agents", "/dlq", "/dlq/" + strconv.FormatUint(seq, 10), "/tasks", "/jobs", "/live", "/audit",
		"/dlq/replay?id=1", "/dlq/purge?id=1"} {
		if code, _ := viewer.get(p); code != http.StatusOK {
			t.Errorf("viewer GET %s: %d, want 200 (a viewer sees everything)", p, code)
		}
	}
	tok := viewer.csrf("/dlq/purge?id=1")
	for path, form := range actions(f, seq) {
		form.Set("csrf", tok)
		if code, body, _ := viewer.do("POST", path, form); code != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d, want 403: %.200s", path, code, body)
		}
	}
	if _, err := f.store.Get(testkit.Context(t), seq); err != nil {
		t.Fatalf("the entry is gone after a viewer's purge: %v", err)
	}
	refused := 0
	for _, r := range f.srv.audit.latest(100) {
		if r.User == "view" && strings.HasPrefix(r.Outcome, "refused") {
			refused++
		}
	}
	if refused != len(actions(f, seq)) {
		t.Errorf("%d refusals audited, want %d", refused, len(actions(f, seq)))
	}
	// The operator with the same form purges (the form is valid).
	op := f.client(t, "op", "pw-op")
	form := actions(f, seq)["/dlq/purge"]
	form.Set("csrf", op.csrf("/dlq/purge?id=1"))
	if code, body, h := op.do("POST", "/dlq/purge", form); code != http.StatusSeeOther {
		t.Fatalf("operator purge: %d %.300s", code, body)
	} else if !strings.HasPrefix(h.Get("Location"), "/jobs/") {
		t.Fatalf("redirected to %q", h.Get("Location"))
	}
	poll(t, "the purge", func() bool {
		_, err := f.store.Get(testkit.Context(t), seq)
		return errors.Is(err, dlq.ErrNotFound)
	})
}

func TestActionWithoutTheCSRFTokenIsRefused(t *testing.T) {
	f := startConsole(t, Auth{})
	seq := f.deadLetter(t, "echo", 1, dlq.ReasonPermanent, "x", "boom")
	c := f.client(t, "", "")
	tok := c.csrf("/dlq/purge?id=1")
	for path, form := range actions(f, seq) {
		if code, _, _ := c.do("POST", path, form); code != http.StatusForbidden {
			t.Errorf("POST %s without a token: %d, want 403", path, code)
		}
		form.Set("csrf", tok+"x")
		if code, _, _ := c.do("POST", path, form); code != http.StatusForbidden {
			t.Errorf("POST %s with a wrong token: %d, want 403", path, code)
		}
	}
	// Another client's token (no cookie of its own) does not work either.
	other := f.client(t, "", "")
	form := actions(f, seq)["/dlq/purge"]
	form.Set("csrf", tok)
	if code, _, _ := other.do("POST", "/dlq/purge", form); code != http.StatusForbidden {
		t.Errorf("a token without its cookie: %d, want 403", code)
	}
	// A cross-site request is refused even with the token.
	req, _ := http.NewRequest("POST", f.url+"/dlq/purge", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := c.hc.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", resp.StatusCode)
	}
	if _, err := f.store.Get(testkit.Context(t), seq); err != nil {
		t.Fatalf("the entry was purged by a refused request: %v", err)
	}
}

func TestWithoutAuthOnlyLoopbackHostNamesAreServed(t *testing.T) {
	f := startConsole(t, Auth{})
	req, _ := http.NewRequest("GET", f.url+"/", nil)
	req.Host = "evil.example:8090" // a page that re-pointed its name at 127.0.0.1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("Host %s: %d, want 403", req.Host, resp.StatusCode)
	}
	if code, _ := f.client(t, "", "").get("/"); code != http.StatusOK {
		t.Errorf("Host 127.0.0.1: %d", code)
	}
}

func TestPayloadsAndErrorsAreEscaped(t *testing.T) {
	f := startConsole(t, Auth{})
	const evil = `<script>alert(1)</script>`
	seq := f.deadLetter(t, "echo", 1, dlq.ReasonPermanent, map[string]any{"note": evil}, "handler said "+evil)
	c := f.client(t, "", "")
	for _, p := range []string{"/dlq", "/dlq/" + strconv.FormatUint(seq, 10), "/agents/echo", "/", "/live"} {
		code, body := c.get(p)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d", p, code)
		}
		if strings.Contains(body, evil) {
			t.Errorf("GET %s: the payload or error is in the page as HTML", p)
		}
	}
	_, body := c.get("/dlq/" + strconv.FormatUint(seq, 10))
	if !strings.Contains(body, `&lt;script&gt;alert(1)&lt;/script&gt;`) {
		t.Errorf("the entry page does not show the payload as text")
	}
}

// A replay of 300 entries at 200/s, cancelled after it started: it stops
// within a chunk, every task that was published has its mark, and no
// entry was published twice; a second replay of all of them publishes
// exactly the ones the first did not.
func TestCancelledReplayLeavesCorrectMarks(t *testing.T) {
	f := startConsole(t, Auth{})
	const n = 300
	for i := range n {
		f.deadLetter(t, "echo", uint64(i+1), dlq.ReasonPermanent, i, "boom")
	}
	got := countTasks(t, f, "echo")
	c := f.client(t, "", "")
	_, preview := c.get("/dlq/replay?scope=all")
	if !strings.Contains(preview, `<b id="would">300</b>`) {
		t.Fatalf("the dry run does not count 300: %.2000s", preview)
	}
	tok := c.csrf("/dlq/replay?scope=all")
	code, body, h := c.do("POST", "/dlq/replay", url.Values{"csrf": {tok}, "scope": {"all"}, "up_to": {strconv.Itoa(n)}, "would": {strconv.Itoa(n)}, "rate": {"200"}})
	if code != http.StatusSeeOther {
		t.Fatalf("replay: %d %.500s", code, body)
	}
	job := h.Get("Location")
	id, _ := strconv.Atoi(strings.TrimPrefix(job, "/jobs/"))
	j := f.srv.jobs.get(id)
	poll(t, "the first replays", func() bool { return j.view().Replayed >= 20 })
	if code, _, _ := c.do("POST", job+"/cancel", url.Values{"csrf": {tok}}); code != http.StatusSeeOther {
		t.Fatalf("cancel: %d", code)
	}
	poll(t, "the job to stop", func() bool { return !j.view().Running() })
	v := j.view()
	if v.State != "cancelled" || v.Replayed >= n || v.Failed != 0 {
		t.Fatalf("job after cancel: %+v", v)
	}
	marked := func() map[uint64]bool {
		out := map[uint64]bool{}
		for _, e := range listAll(t, f) {
			if e.Replays > 0 {
				out[e.Seq] = true
			}
		}
		return out
	}
	poll(t, "the published tasks", func() bool { return len(got()) >= v.Replayed })
	m := marked()
	tasks := got()
	if len(m) != v.Replayed || len(tasks) != v.Replayed {
		t.Fatalf("after the cancel: %d marks, %d tasks, job says %d replayed", len(m), len(tasks), v.Replayed)
	}
	for seq := range tasks {
		if !m[seq] {
			t.Errorf("entry %d was published but has no mark: the next replay would repeat it", seq)
		}
	}
	// Again, all: only the rest is published.
	tok = c.csrf("/dlq/replay?scope=all")
	code, _, h = c.do("POST", "/dlq/replay", url.Values{"csrf": {tok}, "scope": {"all"}, "up_to": {strconv.Itoa(n)}})
	if code != http.StatusSeeOther {
		t.Fatalf("second replay: %d", code)
	}
	id, _ = strconv.Atoi(strings.TrimPrefix(h.Get("Location"), "/jobs/"))
	j2 := f.srv.jobs.get(id)
	poll(t, "the second replay", func() bool { return !j2.view().Running() })
	if v2 := j2.view(); v2.Replayed != n-v.Replayed || v2.Skipped != v.Replayed {
		t.Fatalf("second replay: %+v, want %d replayed and %d skipped", v2, n-v.Replayed, v.Replayed)
	}
	poll(t, "every task", func() bool { return len(got()) == n })
	for seq, k := range got() {
		if k != 1 {
			t.Errorf("entry %d arrived %d times", seq, k)
		}
	}
}

// countTasks counts the tasks published to agent by DLQ entry (the
// replay header), with a consumer of its own.
func countTasks(t testing.TB, f *fixture, agent string) func() map[uint64]int {
	t.Helper()
	cons, err := f.conn.JetStream().CreateOrUpdateConsumer(testkit.Context(t), topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: agent, FilterSubject: topo.AgentTasks(agent), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[uint64]int{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		seq, _ := strconv.ParseUint(m.Headers().Get(dlq.HeaderReplayOf), 10, 64)
		mu.Lock()
		got[seq]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return func() map[uint64]int {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[uint64]int, len(got))
		for k, v := range got {
			out[k] = v
		}
		return out
	}
}

func listAll(t testing.TB, f *fixture) []*dlq.Entry {
	t.Helper()
	es, err := f.store.List(testkit.Context(t), dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// With many marks the console reads the marks of the entries in hand
// instead of all of them: counts, the not-replayed filter and dry runs
// agree either way.
func TestReplayCountsWithFewAndManyMarks(t *testing.T) {
	f := startConsole(t, Auth{})
	for i := range 10 {
		f.deadLetter(t, "echo", uint64(i+1), dlq.ReasonPermanent, i, "boom")
	}
	some, err := f.store.List(testkit.Context(t), dlq.Filter{IDs: []uint64{2, 5, 9}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := f.store.Replay(testkit.Context(t), some, dlq.ReplayOptions{}); err != nil || res.Replayed != 3 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	c := f.client(t, "", "")
	for _, threshold := range []uint64{5000, 0} {
		manyMarks = threshold
		_, page := c.get("/dlq?not_replayed=1")
		if n := strings.Count(page, `name="id" value=`); n != 7 {
			t.Errorf("threshold %d: %d entries not replayed, want 7", threshold, n)
		}
		_, page = c.get("/dlq")
		if n := strings.Count(page, `<td class="n">1</td>`+"\n"+`<td class="err">`); n != 3 {
			t.Errorf("threshold %d: %d entries show 1 replay, want 3", threshold, n)
		}
		_, preview := c.get("/dlq/replay?scope=all")
		if !strings.Contains(preview, `<b id="would">7</b>`) || !strings.Contains(preview, `<b id="already">3</b>`) {
			t.Errorf("threshold %d: dry run %.1500s", threshold, preview)
		}
	}
	manyMarks = 5000
}

// With the NATS connection gone, pages say so at once instead of waiting
// for every request's timeout, and the console still stops cleanly.
func TestPagesSayWhenNATSIsGone(t *testing.T) {
	f := startConsole(t, Auth{})
	f.deadLetter(t, "echo", 1, dlq.ReasonPermanent, "x", "boom")
	f.conn.Close()
	c := f.client(t, "", "")
	for _, p := range []string{"/", "/dlq", "/dlq/1", "/tasks", "/dlq/replay?scope=all"} {
		start := time.Now()
		_, body := c.get(p)
		if !strings.Contains(body, "not connected to NATS") {
			t.Errorf("GET %s does not say the connection is down: %.300s", p, body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("GET %s took %v", p, d)
		}
	}
}
