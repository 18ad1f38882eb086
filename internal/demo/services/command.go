package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// defaultListen is where every program listens unless told otherwise.
const defaultListen = "127.0.0.1:8080"

// Environment variables read when the matching flag is not given.
const (
	envEmojiAddr  = "EMOJI_ADDR"
	envVotingAddr = "VOTING_ADDR"
	envWebURL     = "WEB_URL"
)

// Command returns the hidden demo-app command, whose subcommands emoji,
// voting, web and traffic run the four programs of the sample application,
// one per process. Each stops gracefully and exits 0 on SIGINT or SIGTERM,
// or when the command's context is cancelled.
func Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "demo-app",
		Short:  "Run one program of the demo's sample application (emoji, voting, web or traffic)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("name the program to run: emoji, voting, web or traffic")
		},
	}
	cmd.AddCommand(emojiCommand(), votingCommand(), webCommand(), trafficCommand())
	return cmd
}

func emojiCommand() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "emoji",
		Short: "Serve the Emoji gRPC service: the catalogue of emojis",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd, listen, RunEmoji)
		},
	}
	addListen(cmd, &listen)
	return cmd
}

func votingCommand() *cobra.Command {
	var listen string
	var failRate float64
	cmd := &cobra.Command{
		Use:   "voting",
		Short: "Serve the Voting gRPC service: slow, and some votes fail",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFailRate(failRate); err != nil {
				return fmt.Errorf("--fail-rate: %w", err)
			}
			return serve(cmd, listen, func(ctx context.Context, lis net.Listener, log *slog.Logger) error {
				return RunVoting(ctx, lis, failRate, log)
			})
		},
	}
	addListen(cmd, &listen)
	cmd.Flags().Float64Var(&failRate, "fail-rate", 0.05, "share of Vote calls that fail with UNAVAILABLE, 0 to 1")
	return cmd
}

func webCommand() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "web",
		Short: "Serve the HTTP front end, which calls emoji and voting",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := webConfig(cmd)
			if err != nil {
				return err
			}
			return serve(cmd, listen, func(ctx context.Context, lis net.Listener, log *slog.Logger) error {
				return RunWeb(ctx, lis, cfg, log)
			})
		},
	}
	addListen(cmd, &listen)
	cmd.Flags().String("emoji-addr", "", "emoji service host:port; required, unless $"+envEmojiAddr+" is set")
	cmd.Flags().String("voting-addr", "", "voting service host:port; required, unless $"+envVotingAddr+" is set")
	return cmd
}

// webConfig reads and checks web's back-end addresses.
func webConfig(cmd *cobra.Command) (WebConfig, error) {
	emoji, err := backendAddr(cmd, "emoji-addr", envEmojiAddr)
	if err != nil {
		return WebConfig{}, err
	}
	voting, err := backendAddr(cmd, "voting-addr", envVotingAddr)
	if err != nil {
		return WebConfig{}, err
	}
	return WebConfig{EmojiAddr: emoji, VotingAddr: voting}, nil
}

// backendAddr is the required host:port of flag name, or of env.
func backendAddr(cmd *cobra.Command, name, env string) (string, error) {
	addr, source := flagOrEnv(cmd, name, env)
	if addr == "" {
		return "", fmt.Errorf("--%s (or %s) is required", name, env)
	}
	if err := checkHostPort(addr, false); err != nil {
		return "", fmt.Errorf("%s: %w", source, err)
	}
	return addr, nil
}

func trafficCommand() *cobra.Command {
	var listen string
	cfg := TrafficConfig{}
	cmd := &cobra.Command{
		Use:   "traffic",
		Short: "Send a steady mix of lists and votes to web and report how they fare",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := finishTrafficConfig(cmd, &cfg); err != nil {
				return err
			}
			return serve(cmd, listen, func(ctx context.Context, lis net.Listener, log *slog.Logger) error {
				return runTrafficWithHealth(ctx, lis, cfg, log)
			})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", defaultListen, "address of the health endpoint (GET /healthz), host:port")
	cmd.Flags().String("web-url", "http://"+defaultListen, "web's base URL; $"+envWebURL+", if set, replaces the default")
	cmd.Flags().IntVar(&cfg.RPS, "rps", 20, fmt.Sprintf("requests per second, 1 to %d", maxRPS))
	cmd.Flags().DurationVar(&cfg.ReportEvery, "report-every", 5*time.Second, "how often to print a summary line")
	return cmd
}

// finishTrafficConfig fills in the web URL and checks every setting.
func finishTrafficConfig(cmd *cobra.Command, cfg *TrafficConfig) error {
	webURL, source := flagOrEnv(cmd, "web-url", envWebURL)
	if err := checkWebURL(webURL); err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	if err := checkRPS(cfg.RPS); err != nil {
		return fmt.Errorf("--rps: %w", err)
	}
	if err := checkReportEvery(cfg.ReportEvery); err != nil {
		return fmt.Errorf("--report-every: %w", err)
	}
	cfg.WebURL = webURL
	cfg.Out = cmd.OutOrStdout()
	return nil
}

func addListen(cmd *cobra.Command, listen *string) {
	cmd.Flags().StringVar(listen, "listen", defaultListen, "address to listen on, host:port")
}

// flagOrEnv returns the value of flag name, or of environment variable env
// when the flag was not given and env is set and not empty, with where the
// value came from, for error messages.
func flagOrEnv(cmd *cobra.Command, name, env string) (value, source string) {
	f := cmd.Flags().Lookup(name)
	if !f.Changed {
		if v := os.Getenv(env); v != "" {
			return v, env
		}
	}
	return f.Value.String(), "--" + name
}

// runFunc is the signature of the programs' entry points.
type runFunc func(ctx context.Context, lis net.Listener, log *slog.Logger) error

// serve listens on addr and runs run there until SIGINT, SIGTERM, or the
// end of the command's context, logging to the command's stderr.
func serve(cmd *cobra.Command, addr string, run runFunc) error {
	if err := checkHostPort(addr, true); err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	if err := run(ctx, lis, log); err != nil {
		return err
	}
	log.Info(cmd.Name() + " stopped")
	return nil
}
