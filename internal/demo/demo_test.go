package demo

import (
	"context"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

func TestDemoServesTrafficThroughTheProxiesAndStopsCleanly(t *testing.T) {
	var out testkit.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{RPS: 50, FailRate: 0, Report: 500 * time.Millisecond, Out: &out, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	line := regexp.MustCompile(`success\s+([0-9.]+)%`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := line.FindAllStringSubmatch(out.String(), -1); len(m) >= 2 {
			if rate, _ := strconv.ParseFloat(m[len(m)-1][1], 64); rate != 100 {
				t.Fatalf("with no injected failures the success rate is %v%%\n%s", rate, out.String())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no traffic summary within 10s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not stop within 10s of Ctrl-C")
	}
}
