package run

import (
	"os/exec"
	"testing"
	"time"
)

// The restart backoff doubles from 1 s to 1 min with every exit in a row,
// and starts over for a replica that ran a minute; exits are named as
// label values.
func TestRestartBackoffAndExitReasons(t *testing.T) {
	s := &Set{o: Options{Name: "web"}}
	in := &instance{started: time.Now()}
	var got []time.Duration
	for range 9 {
		d, inARow := in.backoff()
		got = append(got, d)
		in = s.next(in, nil, inARow)
		in.started = time.Now() // exits at once again
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute, time.Minute}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoffs %v, want %v", got, want)
		}
	}
	if in.restarts != 9 {
		t.Errorf("restarts %d, want 9", in.restarts)
	}
	in.started = time.Now().Add(-2 * restartReset)
	if d, inARow := in.backoff(); d != time.Second || inARow != 1 {
		t.Errorf("after running two minutes: %v (%d in a row), want 1s", d, inARow)
	}
	// A replica that failed to start never ran: its backoff goes on growing.
	failed := &instance{inARow: 3}
	if d, _ := failed.backoff(); d != 8*time.Second {
		t.Errorf("after a failed start: %v, want 8s", d)
	}

	for cmd, want := range map[string]string{"exit 3": "exit-3", "kill -KILL $$": "signal-killed", "true": "exit-0"} {
		if got := exitReason(exec.Command("/bin/sh", "-c", cmd).Run()); got != want {
			t.Errorf("%s: %s, want %s", cmd, got, want)
		}
	}
	for policy, want := range map[string][2]bool{RestartAlways: {true, true}, RestartOnFailure: {false, true}, RestartNever: {false, false}} {
		o := &Options{Restart: policy}
		if got := [2]bool{o.restarts(nil), o.restarts(exec.Command("/bin/sh", "-c", "exit 1").Run())}; got != want {
			t.Errorf("--restart %s: restarts after a clean exit, a failure: %v, want %v", policy, got, want)
		}
	}
}
