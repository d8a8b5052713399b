package console

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/runtime/beacon"
	"github.com/jetagent/jetagent/snapshot"
)

var screenshots = flag.Bool("screenshots", false, "write the browser test's screenshots to docs/console/ (else to a temporary directory)")

// chromium returns the browser to drive, or skips the test (fails it
// under CI=true, where `make test` must have installed one).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and no chromium in PATH: `make browser` installs it (apt-get install chromium); `make test` runs it first")
	}
	t.Skip("no chromium in PATH, so the console's browser tests do not run: `make browser` installs it (apt-get install -y chromium)")
	return ""
}

// browser starts a headless Chromium for t and returns its tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.WindowSize(1200, 820))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx)
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // start the browser (no timeout on this first call)
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// tab runs browser steps for one test, each bounded.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // screenshot directory
}

func (b *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func (b *tab) open(path string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base + path))
}

// eval evaluates a JavaScript expression in the page.
func (b *tab) eval(js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// until waits for a JavaScript condition to hold in the page, across
// the navigations a click starts.
func (b *tab) until(what, js string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!(`+js+`)`))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s (%s): %v; page: %.1500s", what, js, last, b.text())
		}
		time.Sleep(50 * time.Millisecond) // the page is the browser's
	}
}

func (b *tab) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return s
}

// reloadUntil reloads the page until a condition holds (for pages that
// show state without a live stream).
func (b *tab) reloadUntil(what, path, js string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b.open(path)
		if b.eval(`String(!!(`+js+`))`) == "true" {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s on %s: %.1500s", what, path, b.text())
		}
		time.Sleep(100 * time.Millisecond) // the state is another process's
	}
}

func (b *tab) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if *screenshots {
		if png, err = smallPNG(png); err != nil {
			b.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(b.shot, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// smallPNG re-encodes a screenshot with a palette of its 256 most common
// colours (a page is mostly flat colours and anti-aliased text), so that
// the committed ones stay small.
func smallPNG(data []byte) ([]byte, error) {
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	bounds := img.Bounds()
	counts := map[color.RGBA]int{}
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			counts[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	colors := make([]color.RGBA, 0, len(counts))
	for c := range counts {
		colors = append(colors, c)
	}
	sort.Slice(colors, func(i, j int) bool { return counts[colors[i]] > counts[colors[j]] })
	pal := make(color.Palette, 0, 256)
	for _, c := range colors[:min(len(colors), 256)] {
		pal = append(pal, c)
	}
	out := image.NewPaletted(bounds, pal)
	nearest := map[color.RGBA]uint8{}
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			i, ok := nearest[c]
			if !ok {
				i = uint8(pal.Index(c))
				nearest[c] = i
			}
			out.SetColorIndex(x, y, i)
		}
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// agents runs the agents the pages show: echo, flaky (always fails: its
// breaker opens) and steps (a task in steps that waits), each reporting
// its status.
type agents struct {
	release func() // lets the steps task go on
}

func startAgents(t *testing.T, conn *bus.Conn) *agents {
	t.Helper()
	release := make(chan struct{})
	var once sync.Once
	a := &agents{release: func() { once.Do(func() { close(release) }) }}
	t.Cleanup(a.release)
	run := func(name string, cfg runtime.Config, h runtime.Handler) {
		bc := beacon.New(conn, topo, name, beacon.Options{Interval: 200 * time.Millisecond})
		cfg.Agent, cfg.Topology, cfg.Logger = name, topo, slog.New(slog.DiscardHandler)
		cfg.Observer = bc.Observer(nil)
		rt, err := runtime.New(conn, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rt.Handle(envelope.TaskRequest, h)
		if err := rt.Start(testkit.Context(t)); err != nil {
			t.Fatal(err)
		}
		bc.Start(rt)
		t.Cleanup(func() {
			bc.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := rt.Stop(ctx); err != nil {
				t.Errorf("stop %s: %v", name, err)
			}
		})
	}
	run("echo", runtime.Config{}, runtime.Echo)
	run("flaky", runtime.Config{Breaker: resilience.BreakerSettings{Threshold: 2, OpenTimeout: time.Hour}},
		func(context.Context, *runtime.Task) (any, error) {
			return nil, errors.New("upstream unavailable")
		})
	run("steps", runtime.Config{KeepSnapshots: true}, func(ctx context.Context, task *runtime.Task) (any, error) {
		if err := task.Step(ctx, 1, func(context.Context) (any, error) { return map[string]any{"fetched": 3}, nil }); err != nil {
			return nil, err
		}
		select { // step 2 waits for the test (or the end of the handler's time)
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return nil, task.Step(ctx, 2, func(context.Context) (any, error) { return nil, nil })
	})
	return a
}

func send(t *testing.T, conn *bus.Conn, agent, taskID string, payload any) {
	t.Helper()
	env, err := envelope.New("test", agent, envelope.TaskRequest, payload)
	if err != nil {
		t.Fatal(err)
	}
	env.TaskID = taskID
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(testkit.Context(t), topo.TaskSubject(agent, envelope.TaskRequest), env); err != nil {
		t.Fatal(err)
	}
}

// The console in a real browser: every page loads (and is photographed),
// the DLQ filters, a replay through the forms reaches its agent once per
// entry, a purge needs its typed count, a task is cancelled, a live event
// arrives, and a payload with a script tag is shown as text.
func TestConsoleInABrowser(t *testing.T) {
	ctx := browser(t)
	srv := natstest.Start(t, natstest.Options{})
	conn := natstest.Connect(t, srv)
	if err := bus.Provision(testkit.Context(t), conn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	ag := startAgents(t, conn)
	f := startConsoleOn(t, conn, Auth{})
	sink := countTasks(t, f, "sink") // a consumer: the agent replays go to
	b := &tab{t: t, ctx: ctx, base: f.url, shot: t.TempDir()}
	if *screenshots {
		b.shot = filepath.Join("..", "..", "docs", "console")
		if err := os.MkdirAll(b.shot, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var dialogs atomic.Int32
	if err := chromedp.Listen(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}

	// Data: dead letters of two agents, a breaker that opens, a task in steps.
	for i := range 20 {
		f.deadLetter(t, "echo", uint64(100+i), dlq.ReasonPermanent, map[string]any{"sku": i, "qty": -1}, "invalid quantity -1 for sku "+strconv.Itoa(i))
	}
	for i := range 10 {
		f.deadLetter(t, "billing", uint64(200+i), dlq.ReasonMaxAttempts, map[string]any{"invoice": 7000 + i}, "timeout talking to the ledger db")
	}
	xss := f.deadLetter(t, "echo", 300, dlq.ReasonPermanent, map[string]any{"comment": "<script>alert(1)</script>"}, "rejected <script>alert(1)</script>")
	for i := range 3 {
		send(t, conn, "flaky", "", i)
	}
	send(t, conn, "steps", "report-42", map[string]any{"month": "2026-11"})
	for i := range 5 {
		send(t, conn, "echo", "", i)
	}

	t.Run("every page loads", func(t *testing.T) {
		b.t = t
		b.reloadUntil("flaky's open breaker", "/", `document.body.innerText.includes("flaky: jetagent.tasks.flaky.task.request is open")`)
		b.reloadUntil("a throughput line", "/", `document.querySelector("svg.chart polyline") !== null && document.querySelector("svg.chart polyline").getAttribute("points").split(" ").length >= 8 && document.body.innerText.includes("flaky: jetagent.tasks.flaky.task.request is open")`)
		b.screenshot("overview")
		for _, p := range []struct{ path, h1, shot string }{
			{"/agents", "Agents", "agents"},
			{"/agents/flaky", "Agent flaky", "agent"},
			{"/dlq", "Dead letters", "dlq"},
			{"/dlq/" + strconv.FormatUint(xss, 10), "Dead letter " + strconv.FormatUint(xss, 10), "entry"},
			{"/dlq/replay?scope=all&agent=echo", "Replay dead letters", "replay"},
			{"/dlq/purge?scope=all&agent=billing", "Purge dead letters", "purge"},
			{"/tasks", "Tasks", "tasks"},
			{"/tasks/steps/report-42", "Task report-42", "task"},
			{"/jobs", "Jobs", ""},
			{"/live", "Live", ""},
			{"/audit", "Audit log", ""},
		} {
			b.open(p.path)
			if h1 := b.eval(`document.querySelector("h1").textContent`); h1 != p.h1 {
				t.Errorf("%s: h1 %q, want %q", p.path, h1, p.h1)
			}
			if p.path == "/tasks/steps/report-42" {
				b.reloadUntil("the task's first checkpoint", p.path, `document.getElementById("status") && document.body.innerText.includes("last completed step 1")`)
			}
			if p.shot != "" {
				b.screenshot(p.shot)
			}
		}
	})

	t.Run("payload renders as text", func(t *testing.T) {
		b.t = t
		b.open("/dlq/" + strconv.FormatUint(xss, 10))
		if got := b.eval(`document.getElementById("payload").textContent`); !strings.Contains(got, `"comment": "<script>alert(1)</script>"`) {
			t.Errorf("payload shown as %q", got)
		}
		if n := b.eval(`String(document.querySelectorAll("main script").length)`); n != "0" {
			t.Errorf("%s script elements in the page's content", n)
		}
		if !strings.Contains(b.text(), "rejected <script>alert(1)</script>") {
			t.Error("the error text is not shown as text")
		}
	})

	t.Run("filter the DLQ", func(t *testing.T) {
		b.t = t
		b.open("/dlq")
		b.do(chromedp.SetValue(chromedp.CSS(`select[name=reason]`), "max_attempts"),
			chromedp.SendKeys(chromedp.CSS(`input[name=q]`), "ledger"),
			chromedp.Click(chromedp.CSS(`form.filter button[type=submit]`)))
		b.until("the filtered page", `location.search.includes("reason=max_attempts") && document.readyState === "complete"`)
		if n := b.eval(`String(document.querySelectorAll("table.dlq input[name=id]").length)`); n != "10" {
			t.Fatalf("%s rows for reason max_attempts and 'ledger', want 10", n)
		}
		if agents := b.eval(`Array.from(document.querySelectorAll("table.dlq tbody tr td:nth-child(4)")).map(td => td.textContent).join(",")`); strings.Contains(agents, "echo") {
			t.Errorf("the filter shows echo's entries: %s", agents)
		}
		b.screenshot("dlq-filtered")
	})

	t.Run("replay through the UI, tasks arrive once", func(t *testing.T) {
		b.t = t
		b.open("/dlq?agent=echo&reason=permanent&q=quantity")
		b.do(chromedp.Click(chromedp.CSS(`button[formaction="/dlq/replay"][value=all]`)))
		b.until("the dry run", `location.pathname === "/dlq/replay" && document.getElementById("would") !== null`)
		if would := b.eval(`document.getElementById("would").textContent`); would != "20" {
			t.Fatalf("dry run counts %s, want 20", would)
		}
		b.do(chromedp.SetValue(chromedp.CSS(`select[name=target]`), "sink"),
			chromedp.SendKeys(chromedp.CSS(`input[name=rate]`), "100"),
			chromedp.Click(chromedp.CSS(`form.confirm button[type=submit]`)))
		b.until("the job to finish", `location.pathname.startsWith("/jobs/") && document.getElementById("state") && document.getElementById("state").textContent === "done"`)
		if s := b.eval(`document.getElementById("summary").textContent`); !strings.Contains(s, "replayed 20, already replayed 0, failed 0") {
			t.Errorf("job summary %q", s)
		}
		b.screenshot("job")
		poll(t, "20 tasks at sink", func() bool { return len(sink()) == 20 })
		for seq, n := range sink() {
			if n != 1 {
				t.Errorf("entry %d arrived %d times", seq, n)
			}
		}
		// Again: nothing left to replay without force.
		b.open("/dlq/replay?scope=all&agent=echo&reason=permanent&q=quantity")
		if would, already := b.eval(`document.getElementById("would").textContent`), b.eval(`document.getElementById("already").textContent`); would != "0" || already != "20" {
			t.Errorf("second dry run: would %s, already %s; want 0 and 20", would, already)
		}
		if n := len(sink()); n != 20 {
			t.Errorf("%d tasks at sink after the second look, want 20", n)
		}
	})

	t.Run("purge with a typed confirmation", func(t *testing.T) {
		b.t = t
		b.open("/dlq?agent=billing")
		b.do(chromedp.Click(chromedp.CSS(`button[formaction="/dlq/purge"][value=all]`)))
		b.until("the purge's count", `location.pathname === "/dlq/purge" && document.getElementById("count") !== null`)
		if n := b.eval(`document.getElementById("count").textContent`); n != "10" {
			t.Fatalf("purge counts %s, want 10", n)
		}
		b.do(chromedp.SendKeys(chromedp.CSS(`input[name=confirm]`), "9"), chromedp.Click(chromedp.CSS(`form.confirm button[type=submit]`)))
		b.until("the refusal", `document.querySelector("p.error") !== null && document.querySelector("p.error").textContent.includes("Type 10")`)
		if es, _ := f.store.List(testkit.Context(t), dlq.Filter{Agent: "billing"}); len(es) != 10 {
			t.Fatalf("%d billing entries after a wrong confirmation, want 10", len(es))
		}
		b.eval(`document.querySelector("input[name=confirm]").value = ""`)
		b.do(chromedp.SendKeys(chromedp.CSS(`input[name=confirm]`), "10"),
			chromedp.Click(chromedp.CSS(`form.confirm button[type=submit]`)))
		b.until("the purge to finish", `location.pathname.startsWith("/jobs/") && document.getElementById("state") && document.getElementById("state").textContent === "done"`)
		if es, _ := f.store.List(testkit.Context(t), dlq.Filter{Agent: "billing"}); len(es) != 0 {
			t.Fatalf("%d billing entries after the purge", len(es))
		}
		if es, _ := f.store.List(testkit.Context(t), dlq.Filter{Agent: "echo"}); len(es) != 21 {
			t.Fatalf("%d echo entries after purging billing's, want 21", len(es))
		}
	})

	t.Run("cancel a task", func(t *testing.T) {
		b.t = t
		b.open("/tasks?agent=steps")
		b.do(chromedp.Click(chromedp.CSS(`a[href="/tasks/steps/report-42"]`)))
		b.until("the task page", `document.getElementById("cancel") !== null`)
		b.do(chromedp.Click(chromedp.CSS(`#cancel`)))
		b.until("the notice", `location.search.includes("done=cancel-sent")`)
		b.reloadUntil("the cancelled status", "/tasks/steps/report-42", `document.getElementById("status") && document.getElementById("status").textContent === "cancelled"`)
		kv, err := snapshot.NewKV(conn.JetStream(), topo)
		if err != nil {
			t.Fatal(err)
		}
		if s, err := kv.Load(testkit.Context(t), "steps", "report-42"); err != nil || s.Status != snapshot.Cancelled {
			t.Fatalf("snapshot after cancel: %+v, %v", s, err)
		}
	})
	ag.release()

	t.Run("a live event arrives", func(t *testing.T) {
		b.t = t
		b.open("/live")
		b.until("the stream", `document.getElementById("live-state").textContent.startsWith("Connected")`)
		seq := f.deadLetter(t, "echo", 999, dlq.ReasonPermanent, "late", "a fresh failure, seen live")
		b.until("the live dead letter", fmt.Sprintf(`Array.from(document.querySelectorAll("#events li.new")).some(li => li.textContent.includes("dead letter %d") && li.textContent.includes("a fresh failure, seen live"))`, seq))
		b.screenshot("live")
		b.open("/audit")
		b.screenshot("audit")
	})

	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d JavaScript dialogs opened: a payload ran as script", n)
	}
}
