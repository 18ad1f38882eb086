package check

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRunnerReport(t *testing.T) {
	attempts := 0
	var out, progress strings.Builder
	ok := Runner{Out: &out, Progress: &progress, Wait: 5 * time.Second, RetryEvery: 10 * time.Millisecond}.Run(context.Background(), []Check{
		{Category: "a", Description: "passes", Run: func(context.Context) error { return nil }},
		{Category: "a", Description: "passes on the third try", Retry: true, Run: func(context.Context) error {
			if attempts++; attempts < 3 {
				return errors.New("not yet")
			}
			return nil
		}},
		{Category: "b", Description: "warns", Warning: true, Run: func(context.Context) error { return errors.New("old version") }},
	})
	if !ok {
		t.Errorf("a warning failed the run:\n%s", out.String())
	}
	want := "a\n-\n✔ passes\n✔ passes on the third try\n\nb\n-\n‼ warns\n    old version\n\nStatus check results are ✔\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
	if n := strings.Count(progress.String(), "not yet"); n != 2 {
		t.Errorf("%d progress lines for 2 retries:\n%s", n, progress.String())
	}
}

func TestRunnerFailures(t *testing.T) {
	var out strings.Builder
	ran := false
	start := time.Now()
	ok := Runner{Out: &out, Wait: 50 * time.Millisecond, RetryEvery: 10 * time.Millisecond}.Run(context.Background(), []Check{
		{Category: "a", Description: "never passes", Retry: true, Hint: "do this", Run: func(context.Context) error { return errors.New("line 1\nline 2") }},
		{Category: "a", Description: "fatal", Fatal: true, Run: func(context.Context) error { return errors.New("gone") }},
		{Category: "a", Description: "skipped", Run: func(context.Context) error { ran = true; return nil }},
	})
	if ok || ran {
		t.Errorf("ok %v, a check after a fatal failure ran %v", ok, ran)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("retries outlived the wait")
	}
	for _, want := range []string{"× never passes\n    line 1\n    line 2\n    see: do this\n", "× fatal\n    gone\n", "skipped\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
