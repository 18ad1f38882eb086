package services

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// execute runs the demo-app command with args and env under ctx and
// returns its stdout, its stderr, and its error.
func execute(ctx context.Context, t *testing.T, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	for _, name := range []string{envEmojiAddr, envVotingAddr, envWebURL} {
		t.Setenv(name, env[name]) // empty counts as unset
	}
	cmd := Command()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	if args == nil {
		args = []string{} // not nil: cobra would read os.Args
	}
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return stdout.String(), stderr.String(), err
}

// cancelled is a context that has ended, so that a command that wrongly
// passes validation returns at once instead of serving.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestCommandRejectsBadFlags(t *testing.T) {
	web := []string{"web", "--emoji-addr=emoji:8080", "--voting-addr=voting:8080"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "name the program to run"},
		{[]string{"bogus"}, nil, `unknown command "bogus"`},
		{[]string{"emoji", "extra"}, nil, `unknown command "extra"`},
		{[]string{"emoji", "--port=1"}, nil, "unknown flag: --port"},
		{[]string{"emoji", "--listen=nowhere"}, nil, `--listen: "nowhere" is not host:port`},
		{[]string{"emoji", "--listen=127.0.0.1:99999"}, nil, "--listen: \"127.0.0.1:99999\": port \"99999\" is not a number"},
		{[]string{"emoji", "--listen=203.0.113.1:8080"}, nil, "--listen: listen tcp"},
		{[]string{"voting", "--fail-rate=2"}, nil, "--fail-rate: 2 is not between 0 and 1"},
		{[]string{"voting", "--fail-rate=-0.1"}, nil, "--fail-rate: -0.1 is not between 0 and 1"},
		{[]string{"voting", "--fail-rate=NaN"}, nil, "--fail-rate: NaN is not between 0 and 1"},
		{[]string{"voting", "--fail-rate=often"}, nil, `invalid argument "often" for "--fail-rate"`},
		{[]string{"voting", "--listen=:http"}, nil, "--listen"},
		{[]string{"web"}, nil, "--emoji-addr (or EMOJI_ADDR) is required"},
		{[]string{"web", "--emoji-addr=emoji:8080"}, nil, "--voting-addr (or VOTING_ADDR) is required"},
		{[]string{"web", "--emoji-addr=emoji", "--voting-addr=voting:8080"}, nil, `--emoji-addr: "emoji" is not host:port`},
		{[]string{"web", "--emoji-addr=:8080", "--voting-addr=voting:8080"}, nil, `--emoji-addr: ":8080" has no host`},
		{[]string{"web", "--emoji-addr=emoji:8080", "--voting-addr=voting:0"}, nil, "--voting-addr"},
		{[]string{"web"}, map[string]string{envEmojiAddr: "emoji"}, `EMOJI_ADDR: "emoji" is not host:port`},
		{[]string{"web", "--emoji-addr=emoji:8080"}, map[string]string{envVotingAddr: "voting:many"}, "VOTING_ADDR: "},
		{[]string{"web", "--emoji-addr=bad"}, map[string]string{envEmojiAddr: "emoji:8080"}, "--emoji-addr: "}, // the flag wins
		{append(web, "--listen=bad"), nil, "--listen"},
		{[]string{"traffic", "--rps=0"}, nil, "--rps: 0 is not between 1 and 10000"},
		{[]string{"traffic", "--rps=-5"}, nil, "--rps: -5 is not between 1 and 10000"},
		{[]string{"traffic", "--rps=1000000"}, nil, "--rps: 1000000 is not between 1 and 10000"},
		{[]string{"traffic", "--rps=fast"}, nil, `invalid argument "fast" for "--rps"`},
		{[]string{"traffic", "--report-every=0s"}, nil, "--report-every: 0s is not positive"},
		{[]string{"traffic", "--report-every=5"}, nil, `invalid argument "5" for "--report-every"`},
		{[]string{"traffic", "--web-url=127.0.0.1:8080"}, nil, "--web-url: "},
		{[]string{"traffic", "--web-url=ftp://web"}, nil, `--web-url: "ftp://web" is not an http:// or https:// URL with a host`},
		{[]string{"traffic"}, map[string]string{envWebURL: "web:8080"}, "WEB_URL: "},
		{[]string{"traffic", "--listen=x"}, nil, "--listen"},
	} {
		_, _, err := execute(cancelled(), t, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("demo-app %s (env %v): error %v; want one with %q", strings.Join(tc.args, " "), tc.env, err, tc.want)
		}
	}
}

// TestCommandsStartAndStop runs each program through its command with a
// context that has ended: each must listen, log its address, stop, and
// return nil. Web and traffic take their back ends from the environment.
func TestCommandsStartAndStop(t *testing.T) {
	env := map[string]string{envEmojiAddr: "emoji.default.svc.cluster.local:8080", envVotingAddr: "127.0.0.1:8082", envWebURL: "http://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want []string // parts of stderr
	}{
		{[]string{"emoji"}, []string{`msg="emoji listening" addr=127.0.0.1:`}},
		{[]string{"voting", "--fail-rate=0.5"}, []string{`msg="voting listening" addr=127.0.0.1:`, "fail_rate=0.5"}},
		{[]string{"web"}, []string{`msg="web listening" addr=127.0.0.1:`, "emoji=emoji.default.svc.cluster.local:8080", "voting=127.0.0.1:8082"}},
		{[]string{"web", "--voting-addr=localhost:9000"}, []string{"voting=localhost:9000"}},
		{[]string{"traffic", "--rps=5"}, []string{`msg="traffic listening" addr=127.0.0.1:`, "web_url=http://127.0.0.1:1", "rps=5"}},
	} {
		args := append(tc.args, "--listen=127.0.0.1:0")
		_, stderr, err := execute(cancelled(), t, env, args...)
		if err != nil {
			t.Errorf("demo-app %s: %v", strings.Join(args, " "), err)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("demo-app %s logged %q; want %q in it", strings.Join(args, " "), stderr, w)
			}
		}
	}
}

func TestCommandIsHidden(t *testing.T) {
	cmd := Command()
	if !cmd.Hidden || cmd.Name() != "demo-app" {
		t.Errorf("command %q hidden=%v; want a hidden demo-app", cmd.Name(), cmd.Hidden)
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.Runnable() {
			names = append(names, c.Name())
		}
	}
	if got := strings.Join(names, " "); got != "emoji traffic voting web" {
		t.Errorf("subcommands %q; want emoji traffic voting web", got)
	}
}
