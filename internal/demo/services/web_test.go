package services

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	demov1 "github.com/trellis-mesh/trellis/api/demo/v1"
)

// fakeEmoji is an Emoji client that fails as told, and otherwise answers
// from the real catalogue.
type fakeEmoji struct{ listErr, findErr error }

func (f fakeEmoji) List(ctx context.Context, in *demov1.ListRequest, _ ...grpc.CallOption) (*demov1.ListResponse, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	return newEmojiServer(catalogue).List(ctx, in)
}

func (f fakeEmoji) Find(ctx context.Context, in *demov1.FindRequest, _ ...grpc.CallOption) (*demov1.EmojiEntry, error) {
	if f.findErr != nil {
		return nil, f.findErr
	}
	return newEmojiServer(catalogue).Find(ctx, in)
}

// fakeVoting is a Voting client that fails as told, and otherwise has
// three votes for :rose: and one for an emoji that emoji does not know.
type fakeVoting struct{ voteErr, resultsErr error }

func (f fakeVoting) Vote(context.Context, *demov1.VoteRequest, ...grpc.CallOption) (*demov1.VoteResponse, error) {
	if f.voteErr != nil {
		return nil, f.voteErr
	}
	return &demov1.VoteResponse{}, nil
}

func (f fakeVoting) Results(context.Context, *demov1.ResultsRequest, ...grpc.CallOption) (*demov1.ResultsResponse, error) {
	if f.resultsErr != nil {
		return nil, f.resultsErr
	}
	return &demov1.ResultsResponse{Results: []*demov1.Result{
		{Shortcode: ":rose:", Votes: 3},
		{Shortcode: ":gone:", Votes: 1},
	}}, nil
}

func TestWebStatus(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, badMoment)
	for _, tc := range []struct {
		name         string
		emoji        fakeEmoji
		voting       fakeVoting
		method, path string
		want         int
		wantBody     string // a part of the body
	}{
		{"vote", fakeEmoji{}, fakeVoting{}, "POST", "/api/vote?choice=:rose:", 200, `"unicode":"🌹"`},
		{"vote unknown emoji", fakeEmoji{}, fakeVoting{}, "POST", "/api/vote?choice=:unicorn:", 404, `"error":"emoji: no emoji`},
		{"find NOT_FOUND", fakeEmoji{findErr: status.Error(codes.NotFound, "gone")}, fakeVoting{}, "POST", "/api/vote?choice=:rose:", 404, `"error":"emoji: gone"`},
		{"vote UNAVAILABLE", fakeEmoji{}, fakeVoting{voteErr: unavailable}, "POST", "/api/vote?choice=:rose:", 502, `"error":"voting: voting had a bad moment"`},
		{"find UNAVAILABLE", fakeEmoji{findErr: unavailable}, fakeVoting{}, "POST", "/api/vote?choice=:rose:", 502, `"error":"emoji: `},
		{"vote INTERNAL", fakeEmoji{}, fakeVoting{voteErr: status.Error(codes.Internal, "oops")}, "POST", "/api/vote?choice=:rose:", 502, `"error"`},
		{"vote DEADLINE_EXCEEDED", fakeEmoji{}, fakeVoting{voteErr: status.Error(codes.DeadlineExceeded, "slow")}, "POST", "/api/vote?choice=:rose:", 504, `"error"`},
		{"vote without choice", fakeEmoji{}, fakeVoting{}, "POST", "/api/vote", 400, `"error"`},
		{"vote with GET", fakeEmoji{}, fakeVoting{}, "GET", "/api/vote?choice=:rose:", 405, ""},
		{"list", fakeEmoji{}, fakeVoting{}, "GET", "/api/list", 200, `{"shortcode":":sunflower:","unicode":"🌻"}`},
		{"list UNAVAILABLE", fakeEmoji{listErr: unavailable}, fakeVoting{}, "GET", "/api/list", 502, `"error"`},
		{"results", fakeEmoji{}, fakeVoting{}, "GET", "/api/results", 200, `[{"shortcode":":rose:","unicode":"🌹","votes":3},{"shortcode":":gone:","votes":1}]`},
		{"results, voting UNAVAILABLE", fakeEmoji{}, fakeVoting{resultsErr: unavailable}, "GET", "/api/results", 502, `"error":"voting: `},
		{"results, emoji UNAVAILABLE", fakeEmoji{listErr: unavailable}, fakeVoting{}, "GET", "/api/results", 502, `"error":"emoji: `},
		{"index", fakeEmoji{}, fakeVoting{}, "GET", "/", 200, "<title>"},
		{"no such page", fakeEmoji{}, fakeVoting{}, "GET", "/nope", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newWebHandler(tc.emoji, tc.voting, testLog(t))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.want || !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("%s %s: %d %s; want %d with %s", tc.method, tc.path, rec.Code, rec.Body, tc.want, tc.wantBody)
			}
			// Every API error but the mux's 405 is a JSON {"error": ...}.
			if strings.HasPrefix(tc.path, "/api/") && rec.Code != http.StatusOK && rec.Code != http.StatusMethodNotAllowed {
				var body struct{ Error string }
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == "" {
					t.Errorf("error body %q is not JSON {\"error\": ...}", rec.Body)
				}
			}
		})
	}
}

func TestHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{status.Error(codes.NotFound, ""), http.StatusNotFound},
		{status.Error(codes.Unavailable, ""), http.StatusBadGateway},
		{status.Error(codes.InvalidArgument, ""), http.StatusBadRequest},
		{status.Error(codes.DeadlineExceeded, ""), http.StatusGatewayTimeout},
		{status.Error(codes.Internal, ""), http.StatusBadGateway},
		{status.Error(codes.Unknown, ""), http.StatusBadGateway},
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
		{errors.New("connection refused"), http.StatusBadGateway},
	} {
		if got := httpStatus(tc.err); got != tc.want {
			t.Errorf("httpStatus(%v) = %d; want %d", tc.err, got, tc.want)
		}
	}
}

func TestWebConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		cfg  WebConfig
		want string // part of the error; "" for none
	}{
		{WebConfig{"127.0.0.1:8081", "127.0.0.1:8082"}, ""},
		{WebConfig{"emoji.default.svc.cluster.local:8080", "voting.default.svc.cluster.local:8080"}, ""},
		{WebConfig{"[::1]:8081", "localhost:8082"}, ""},
		{WebConfig{"", "127.0.0.1:8082"}, "emoji address"},
		{WebConfig{"emoji", "127.0.0.1:8082"}, "emoji address"},
		{WebConfig{"127.0.0.1:8081", ":8082"}, "voting address"},
		{WebConfig{"127.0.0.1:8081", "voting:0"}, "voting address"},
		{WebConfig{"127.0.0.1:8081", "voting:http"}, "voting address"},
		{WebConfig{"127.0.0.1:8081", "voting:70000"}, "voting address"},
	} {
		err := tc.cfg.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v.Check() = %v; want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

// TestWebResolvesNames checks that web reaches a back end named by a DNS
// name, not only by an IP address.
func TestWebResolvesNames(t *testing.T) {
	a := startApp(t, 0)
	port := a.emojiAddr[strings.LastIndexByte(a.emojiAddr, ':'):]
	wl := listen(t)
	cfg := WebConfig{EmojiAddr: "localhost" + port, VotingAddr: a.votingAddr}
	start(t, "web", func(ctx context.Context) error { return RunWeb(ctx, wl, cfg, testLog(t)) })
	resp, err := http.Get("http://" + wl.Addr().String() + "/api/list")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /api/list with emoji at localhost%s: %s", port, resp.Status)
	}
}
