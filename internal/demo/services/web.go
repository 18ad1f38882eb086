package services

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	demov1 "github.com/trellis-mesh/trellis/api/demo/v1"
)

// backendTimeout bounds each call web makes to emoji or voting.
const backendTimeout = 3 * time.Second

// WebConfig says where web finds its back ends.
type WebConfig struct {
	// EmojiAddr is the emoji service's host:port, such as
	// "emoji.default.svc.cluster.local:8080" or "127.0.0.1:8081".
	EmojiAddr string
	// VotingAddr is the voting service's host:port.
	VotingAddr string
}

// Check reports whether both addresses are usable host:port pairs.
func (c WebConfig) Check() error {
	if err := checkHostPort(c.EmojiAddr, false); err != nil {
		return fmt.Errorf("emoji address: %w", err)
	}
	if err := checkHostPort(c.VotingAddr, false); err != nil {
		return fmt.Errorf("voting address: %w", err)
	}
	return nil
}

// checkHostPort reports whether addr is host:port with a port in 1–65535
// (0 too when zeroPort); an empty host is allowed only with zeroPort, which
// is for addresses to listen on.
func checkHostPort(addr string, zeroPort bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "" && !zeroPort {
		return fmt.Errorf("%q has no host", addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !zeroPort) {
		return fmt.Errorf("%q: port %q is not a number between 1 and 65535", addr, port)
	}
	return nil
}

// dial returns a client for the service at addr. It does not connect: the
// first call does. Names are resolved through DNS; the connection is
// plaintext because the mesh, not the application, provides mTLS.
func dial(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("dns:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// RunWeb serves the web front end on lis until ctx is cancelled, then shuts
// down gracefully and returns nil. It closes lis. A nil log discards logs.
func RunWeb(ctx context.Context, lis net.Listener, cfg WebConfig, log *slog.Logger) error {
	defer lis.Close() // in case it never gets to serveHTTP
	log = orDiscard(log)
	if err := cfg.Check(); err != nil {
		return err
	}
	emojiConn, err := dial(cfg.EmojiAddr)
	if err != nil {
		return err
	}
	defer emojiConn.Close()
	votingConn, err := dial(cfg.VotingAddr)
	if err != nil {
		return err
	}
	defer votingConn.Close()
	h := newWebHandler(demov1.NewEmojiClient(emojiConn), demov1.NewVotingClient(votingConn), log)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Info("web listening", "addr", lis.Addr().String(), "emoji", cfg.EmojiAddr, "voting", cfg.VotingAddr)
	return serveHTTP(ctx, lis, srv)
}

// webEmoji is an emoji as web's JSON shows it.
type webEmoji struct {
	Shortcode string `json:"shortcode"`
	Unicode   string `json:"unicode,omitempty"`
}

// webResult is one line of GET /api/results.
type webResult struct {
	webEmoji
	Votes int64 `json:"votes"`
}

// webHandler is web's HTTP API over its two back ends.
type webHandler struct {
	emoji  demov1.EmojiClient
	voting demov1.VotingClient
	log    *slog.Logger
}

// newWebHandler routes web's pages and API to handlers using the clients.
func newWebHandler(emoji demov1.EmojiClient, voting demov1.VotingClient, log *slog.Logger) http.Handler {
	h := &webHandler{emoji: emoji, voting: voting, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.index)
	mux.HandleFunc("GET /api/list", h.list)
	mux.HandleFunc("POST /api/vote", h.vote)
	mux.HandleFunc("GET /api/results", h.results)
	return mux
}

func (h *webHandler) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(indexHTML))
}

func (h *webHandler) list(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	resp, err := h.emoji.List(ctx, &demov1.ListRequest{})
	if err != nil {
		h.fail(w, "emoji", err)
		return
	}
	out := make([]webEmoji, 0, len(resp.GetEmojis()))
	for _, e := range resp.GetEmojis() {
		out = append(out, toWeb(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *webHandler) vote(w http.ResponseWriter, r *http.Request) {
	choice := r.URL.Query().Get("choice")
	if choice == "" {
		writeError(w, http.StatusBadRequest, "missing ?choice=SHORTCODE")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	e, err := h.emoji.Find(ctx, &demov1.FindRequest{Shortcode: choice})
	if err != nil {
		h.fail(w, "emoji", err)
		return
	}
	if _, err := h.voting.Vote(ctx, &demov1.VoteRequest{Shortcode: e.GetShortcode()}); err != nil {
		h.fail(w, "voting", err)
		return
	}
	writeJSON(w, http.StatusOK, toWeb(e))
}

func (h *webHandler) results(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	res, err := h.voting.Results(ctx, &demov1.ResultsRequest{})
	if err != nil {
		h.fail(w, "voting", err)
		return
	}
	list, err := h.emoji.List(ctx, &demov1.ListRequest{})
	if err != nil {
		h.fail(w, "emoji", err)
		return
	}
	writeJSON(w, http.StatusOK, joinResults(res.GetResults(), list.GetEmojis()))
}

// joinResults adds each emoji's character to its vote count; counts for
// shortcodes emoji does not know keep an empty one.
func joinResults(results []*demov1.Result, emojis []*demov1.EmojiEntry) []webResult {
	unicode := make(map[string]string, len(emojis))
	for _, e := range emojis {
		unicode[e.GetShortcode()] = e.GetUnicode()
	}
	out := make([]webResult, 0, len(results))
	for _, r := range results {
		code := r.GetShortcode()
		out = append(out, webResult{webEmoji{code, unicode[code]}, r.GetVotes()})
	}
	return out
}

func toWeb(e *demov1.EmojiEntry) webEmoji {
	return webEmoji{Shortcode: e.GetShortcode(), Unicode: e.GetUnicode()}
}

// fail answers a request whose call to backend failed with err.
func (h *webHandler) fail(w http.ResponseWriter, backend string, err error) {
	code := httpStatus(err)
	h.log.Debug("back end call failed", "backend", backend, "err", err, "http_status", code)
	writeError(w, code, backend+": "+status.Convert(err).Message())
}

// httpStatus is the HTTP status web answers with when a back-end call fails
// with err: the caller's mistakes keep their meaning, timeouts are 504, and
// any other failure of a back end is 502.
func httpStatus(err error) int {
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	switch status.Code(err) {
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	default:
		return http.StatusBadGateway
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The status line is out; a failed write means the client left.
	_ = json.NewEncoder(w).Encode(v)
}

// indexHTML is the page at GET /: it lists the emojis, votes on click, and
// shows the results. It only ever inserts data as text, never as HTML.
const indexHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Trellis demo: vote for an emoji</title>
<style>
body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
button { font-size: 2em; margin: .1em; }
#status { min-height: 1.5em; }
</style>
</head>
<body>
<h1>Vote for your favourite emoji</h1>
<div id="emojis"></div>
<p id="status"></p>
<h2>Results</h2>
<ol id="results"></ol>
<script>
const status = document.getElementById("status");
async function call(method, path) {
  const resp = await fetch(path, {method});
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}
async function results() {
  const list = document.getElementById("results");
  list.replaceChildren(...(await call("GET", "/api/results")).map(r => {
    const li = document.createElement("li");
    li.textContent = r.unicode + " " + r.shortcode + ": " + r.votes;
    return li;
  }));
}
async function vote(e) {
  try {
    await call("POST", "/api/vote?choice=" + encodeURIComponent(e.shortcode));
    status.textContent = "You voted for " + e.unicode;
    await results();
  } catch (err) {
    status.textContent = "Vote failed: " + err.message;
  }
}
async function start() {
  try {
    const div = document.getElementById("emojis");
    for (const e of await call("GET", "/api/list")) {
      const b = document.createElement("button");
      b.textContent = e.unicode;
      b.title = e.shortcode;
      b.onclick = () => vote(e);
      div.append(b);
    }
    await results();
  } catch (err) {
    status.textContent = "Something failed: " + err.message;
  }
}
start();
</script>
</body>
</html>
`
