package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs one command with the given stdin and returns what it wrote.
// err is non-nil when the command could not start or exited non-zero.
// Tests substitute a fake to assert the exact commands and restore input.
type Runner interface {
	Run(ctx context.Context, name string, args []string, stdin []byte) (stdout, stderr []byte, err error)
}

// ExecRunner is the Runner that executes commands with os/exec.
type ExecRunner struct {
	// NetNS, when set, names a network namespace (as listed by
	// `ip netns list`); commands then run under `ip netns exec NetNS`.
	NetNS string
}

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, []byte, error) {
	if r.NetNS != "" {
		args = append([]string{"netns", "exec", r.NetNS, name}, args...)
		name = "ip"
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stdout.Bytes(), stderr.Bytes(), err
}

// run calls r and, on failure, wraps the error with the command line, its
// stderr and, when the command names a failing line of stdin, that line.
func run(ctx context.Context, r Runner, name string, args []string, stdin []byte) ([]byte, error) {
	stdout, stderr, err := r.Run(ctx, name, args, stdin)
	if err == nil {
		return stdout, nil
	}
	cmdline := strings.Join(append([]string{name}, args...), " ")
	msg := tidyStderr(stderr)
	if line := failedLine(msg, stdin); line != "" {
		msg += fmt.Sprintf(" (input line: %q)", line)
	}
	if msg == "" {
		return nil, fmt.Errorf("%s: %w", cmdline, err)
	}
	return nil, fmt.Errorf("%s: %w: %s", cmdline, err, msg)
}

// failedLine returns the stdin line that iptables-restore's
// "Error occurred at line: N" refers to, or "".
func failedLine(stderr string, stdin []byte) string {
	const marker = "Error occurred at line: "
	_, after, ok := strings.Cut(stderr, marker)
	if !ok {
		return ""
	}
	var n int
	if _, err := fmt.Sscanf(after, "%d", &n); err != nil {
		return ""
	}
	lines := strings.Split(string(stdin), "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return lines[n-1]
}

// tidyStderr joins the informative lines of stderr with "; ", dropping
// blank lines, "Try `... -h'" hints and "# Warning" notes.
func tidyStderr(stderr []byte) string {
	var keep []string
	for _, line := range strings.Split(string(stderr), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "Try `") || strings.HasPrefix(line, "#") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "; ")
}
