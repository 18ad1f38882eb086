package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	crashChildEnv = "TRELLIS_STORE_CRASH_CHILD_DB"
	crashRoundEnv = "TRELLIS_STORE_CRASH_ROUND"
)

// crashChild runs in a re-executed test binary: it applies objects until it
// is killed, printing "rv name" after each acknowledged write.
func crashChild(path, round string) int {
	db, err := Open(path, Options{Kinds: fakeKinds{}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		name := fmt.Sprintf("r%s-%d", round, i)
		out, err := db.Apply(ctx, widget("crash", name, i%10+1, map[string]string{"round": round}))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		fmt.Printf("%s %s\n", out.Metadata.ResourceVersion, name) // one write(2): atomic on a pipe
	}
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	acked := map[string]uint64{} // name -> rv, over all rounds
	for round := range 5 {
		stop := 5 + rand.IntN(60)
		lines, stderr := runAndKill(t, path, round, stop)
		if len(lines) < stop {
			t.Fatalf("round %d: child printed %d lines before exiting (stderr: %s)", round, len(lines), stderr)
		}
		var maxRV uint64
		for _, l := range lines {
			rvStr, name, ok := strings.Cut(l, " ")
			rv, err := strconv.ParseUint(rvStr, 10, 64)
			if !ok || err != nil {
				t.Fatalf("round %d: bad line %q", round, l)
			}
			acked[name] = rv
			maxRV = max(maxRV, rv)
		}

		db, err := Open(path, Options{Kinds: fakeKinds{}})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		if db.ResourceVersion() < maxRV {
			t.Errorf("round %d: rv %d < acknowledged %d", round, db.ResourceVersion(), maxRV)
		}
		for name, rv := range acked {
			got, err := db.Get(context.Background(), Key{"Widget", "crash", name})
			if err != nil {
				t.Errorf("round %d: acknowledged %s (rv %d) lost: %v", round, name, rv, err)
			} else if got.Metadata.ResourceVersion != strconv.FormatUint(rv, 10) {
				t.Errorf("round %d: %s has rv %s, acknowledged %d", round, name, got.Metadata.ResourceVersion, rv)
			}
		}
		items, listRV, err := db.List(context.Background(), "Widget", "crash", nil)
		if err != nil || len(items) < len(acked) || listRV != db.ResourceVersion() {
			t.Errorf("round %d: List %d items (acked %d) rv %d: %v", round, len(items), len(acked), listRV, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		checkConsistent(t, path)
	}
	t.Logf("%d acknowledged writes survived 5 SIGKILLs", len(acked))
}

// runAndKill starts a child writer, SIGKILLs it after it acknowledged stop
// writes, and returns every line it printed.
func runAndKill(t *testing.T, path string, round, stop int) ([]string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	var lines []string
	sc := bufio.NewScanner(out)
	for len(lines) < stop && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	// Kill at a random point of the next write, then collect the lines
	// already in the pipe: those writes were acknowledged too.
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
	_ = cmd.Process.Kill() // SIGKILL on Unix
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	_ = cmd.Wait()
	return lines, stderr.String()
}

// checkConsistent runs bbolt's page-level consistency check on the closed file.
func checkConsistent(t *testing.T, path string) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	if err := bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
