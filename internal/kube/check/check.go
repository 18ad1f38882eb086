// Package check is `trellis check`: a list of checks of a cluster and the
// Trellis installed in it, each printed as a ✔ or × line under its
// category, in the spirit of `linkerd check`. A check that may pass once
// the cluster settles (a Deployment rolling out, a webhook starting) is
// retried until the wait runs out; a fatal check's failure skips the rest.
package check

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Check is one line of the report.
type Check struct {
	Category    string
	Description string
	// Hint is printed under a failure: what to do about it.
	Hint string
	// Retry retries the check until it passes or the wait runs out.
	Retry bool
	// Warning reports a failure with ‼ without failing the run.
	Warning bool
	// Fatal skips every later check when this one fails.
	Fatal bool
	Run   func(ctx context.Context) error
}

// Runner runs checks.
type Runner struct {
	Out io.Writer
	// Progress receives a line whenever a retried check is still failing.
	Progress io.Writer
	// Wait bounds the retries of every Retry check together.
	Wait time.Duration
	// RetryEvery is the pause between attempts (1 s if zero).
	RetryEvery time.Duration
}

// Run runs checks in order and reports whether every non-warning check
// passed.
func (r Runner) Run(ctx context.Context, checks []Check) bool {
	every := r.RetryEvery
	if every <= 0 {
		every = time.Second
	}
	deadline := time.Now().Add(r.Wait)
	ok, category := true, ""
	for _, c := range checks {
		if c.Category != category {
			if category != "" {
				fmt.Fprintln(r.Out)
			}
			category = c.Category
			fmt.Fprintf(r.Out, "%s\n%s\n", category, strings.Repeat("-", len(category)))
		}
		err := c.Run(ctx)
		for err != nil && c.Retry && time.Now().Add(every).Before(deadline) && ctx.Err() == nil {
			if r.Progress != nil {
				fmt.Fprintf(r.Progress, "… %s: %v (retrying until %s)\n", c.Description, err, deadline.Format(time.TimeOnly))
			}
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
			err = c.Run(ctx)
		}
		switch {
		case err == nil:
			fmt.Fprintf(r.Out, "✔ %s\n", c.Description)
			continue
		case c.Warning:
			fmt.Fprintf(r.Out, "‼ %s\n", c.Description)
		default:
			fmt.Fprintf(r.Out, "× %s\n", c.Description)
			ok = false
		}
		fmt.Fprintf(r.Out, "    %s\n", indent(err.Error()))
		if c.Hint != "" {
			fmt.Fprintf(r.Out, "    see: %s\n", c.Hint)
		}
		if c.Fatal {
			fmt.Fprintln(r.Out, "\nthe remaining checks need this one: skipped")
			return false
		}
	}
	fmt.Fprintln(r.Out)
	if ok {
		fmt.Fprintln(r.Out, "Status check results are ✔")
	} else {
		fmt.Fprintln(r.Out, "Status check results are ×")
	}
	return ok
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }
