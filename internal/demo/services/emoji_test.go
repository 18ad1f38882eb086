package services

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	demov1 "github.com/trellis-mesh/trellis/api/demo/v1"
)

func TestCatalogue(t *testing.T) {
	if n := len(catalogue); n < 18 || n > 25 {
		t.Errorf("catalogue has %d emojis; want about 20", n)
	}
	seen := map[string]bool{}
	for _, e := range catalogue {
		if e.GetShortcode() == "" || e.GetUnicode() == "" || seen[e.GetShortcode()] {
			t.Errorf("bad or duplicate entry %v", e)
		}
		seen[e.GetShortcode()] = true
	}
}

func TestEmojiFind(t *testing.T) {
	s := newEmojiServer(catalogue)
	for _, tc := range []struct {
		shortcode string
		want      codes.Code
	}{
		{":sunflower:", codes.OK},
		{":butterfly:", codes.OK},
		{":unicorn:", codes.NotFound},
		{"sunflower", codes.NotFound},
		{"", codes.InvalidArgument},
	} {
		e, err := s.Find(context.Background(), &demov1.FindRequest{Shortcode: tc.shortcode})
		if got := status.Code(err); got != tc.want {
			t.Errorf("Find(%q): %v; want code %v", tc.shortcode, err, tc.want)
			continue
		}
		if err == nil && e.GetShortcode() != tc.shortcode {
			t.Errorf("Find(%q) = %v", tc.shortcode, e)
		}
	}
}

func TestEmojiListOverGRPC(t *testing.T) {
	lis := listen(t)
	start(t, "emoji", func(ctx context.Context) error { return RunEmoji(ctx, lis, testLog(t)) })
	conn, err := dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := demov1.NewEmojiClient(conn).List(context.Background(), &demov1.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEmojis()) != len(catalogue) || resp.GetEmojis()[0].GetShortcode() != catalogue[0].GetShortcode() {
		t.Errorf("List returned %d emojis starting %v; want the catalogue", len(resp.GetEmojis()), resp.GetEmojis()[0])
	}
}
