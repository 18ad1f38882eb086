// Package webtest drives the dashboard in a real headless Chromium (the
// system's chromium package, nothing downloaded) for tests, and fails the
// test on any console error, uncaught exception, or request to a host other
// than the dashboard's.
package webtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium tab on a dashboard.
type Browser struct {
	t    *testing.T
	ctx  context.Context
	base *url.URL

	mu       sync.Mutex
	problems []string
}

// chromium finds the system browser.
func chromium() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no chromium on PATH (apt-get install chromium; .ci/run installs it)")
}

// Open starts Chromium with a 1280×800 viewport on the dashboard at base
// (its URL, with its token);
// the test's end closes it and reports what went wrong in the page.
func Open(t *testing.T, base string) *Browser {
	t.Helper()
	exe, err := chromium()
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.WindowSize(1280, 800),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &Browser{t: t, base: u}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	b.ctx = ctx
	// The first page is base itself: its token, if any, becomes the
	// dashboard's cookie; later pages go by the address without it.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base)); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting chromium on %s: %v", base, err)
	}
	b.base.RawQuery = ""
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			t.Errorf("in the page: %s", p)
		}
	})
	return b
}

// listen records what goes wrong in the page (it runs in the tab's reading
// loop: it only appends).
func (b *Browser) listen(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			b.problem("console error: %s", args(ev.Args))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		desc := d.Text
		if d.Exception != nil {
			desc += " " + d.Exception.Description
		}
		b.problem("uncaught exception: %s (%s:%d)", desc, d.URL, d.LineNumber+1)
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError {
			b.problem("browser error: %s (%s)", ev.Entry.Text, ev.Entry.URL)
		}
	case *network.EventRequestWillBeSent:
		r, err := url.Parse(ev.Request.URL)
		if err != nil || (r.Scheme != "data" && r.Host != b.base.Host) {
			b.problem("request to another host: %s", ev.Request.URL)
		}
	}
}

func args(as []*runtime.RemoteObject) string {
	var parts []string
	for _, a := range as {
		if a.Value != nil {
			parts = append(parts, string(a.Value))
		} else {
			parts = append(parts, a.Description)
		}
	}
	return strings.Join(parts, " ")
}

func (b *Browser) problem(format string, a ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, fmt.Sprintf(format, a...))
}

// Go opens the dashboard's page at fragment (e.g. "#/topology").
func (b *Browser) Go(fragment string) {
	b.t.Helper()
	b.run(chromedp.Navigate(b.base.String() + fragment))
}

// Eval evaluates the JavaScript expression and returns its JSON value.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// WaitFor evaluates expr (a JavaScript expression) until it is true, or
// fails the test after timeout; it returns how long that took.
func (b *Browser) WaitFor(what, expr string, timeout time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	for {
		if ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("Boolean("+expr+")")); err == nil && ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			b.t.Fatalf("%s: not within %v (%s)", what, timeout, expr)
		}
		time.Sleep(50 * time.Millisecond) // polling the page, not synchronisation
	}
}

// Screenshot saves the viewport as a PNG in dir/name.png.
func (b *Browser) Screenshot(dir, name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *Browser) run(action chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, action); err != nil {
		b.t.Fatal(err)
	}
}
