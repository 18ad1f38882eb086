package services

import (
	"context"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	demov1 "github.com/trellis-mesh/trellis/api/demo/v1"
)

// catalogue is every emoji the demo knows, in the order List returns them.
var catalogue = []*demov1.EmojiEntry{
	{Shortcode: ":sunflower:", Unicode: "🌻"},
	{Shortcode: ":seedling:", Unicode: "🌱"},
	{Shortcode: ":herb:", Unicode: "🌿"},
	{Shortcode: ":four_leaf_clover:", Unicode: "🍀"},
	{Shortcode: ":cactus:", Unicode: "🌵"},
	{Shortcode: ":mushroom:", Unicode: "🍄"},
	{Shortcode: ":tulip:", Unicode: "🌷"},
	{Shortcode: ":maple_leaf:", Unicode: "🍁"},
	{Shortcode: ":evergreen_tree:", Unicode: "🌲"},
	{Shortcode: ":palm_tree:", Unicode: "🌴"},
	{Shortcode: ":cherry_blossom:", Unicode: "🌸"},
	{Shortcode: ":rose:", Unicode: "🌹"},
	{Shortcode: ":hibiscus:", Unicode: "🌺"},
	{Shortcode: ":blossom:", Unicode: "🌼"},
	{Shortcode: ":ear_of_rice:", Unicode: "🌾"},
	{Shortcode: ":fallen_leaf:", Unicode: "🍂"},
	{Shortcode: ":leaves:", Unicode: "🍃"},
	{Shortcode: ":potted_plant:", Unicode: "🪴"},
	{Shortcode: ":snail:", Unicode: "🐌"},
	{Shortcode: ":honeybee:", Unicode: "🐝"},
	{Shortcode: ":ladybug:", Unicode: "🐞"},
	{Shortcode: ":butterfly:", Unicode: "🦋"},
}

// emojiServer implements trellis.demo.v1.Emoji over a fixed catalogue.
type emojiServer struct {
	demov1.UnimplementedEmojiServer
	list    []*demov1.EmojiEntry
	byShort map[string]*demov1.EmojiEntry
}

func newEmojiServer(list []*demov1.EmojiEntry) *emojiServer {
	s := &emojiServer{list: list, byShort: make(map[string]*demov1.EmojiEntry, len(list))}
	for _, e := range list {
		s.byShort[e.GetShortcode()] = e
	}
	return s
}

// List returns the whole catalogue.
func (s *emojiServer) List(context.Context, *demov1.ListRequest) (*demov1.ListResponse, error) {
	return &demov1.ListResponse{Emojis: s.list}, nil
}

// Find returns the emoji with the requested shortcode, NOT_FOUND if there is
// none.
func (s *emojiServer) Find(_ context.Context, req *demov1.FindRequest) (*demov1.EmojiEntry, error) {
	code := req.GetShortcode()
	if code == "" {
		return nil, status.Error(codes.InvalidArgument, "shortcode is empty")
	}
	e, ok := s.byShort[code]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no emoji %q", code)
	}
	return e, nil
}

// RunEmoji serves the Emoji gRPC service on lis until ctx is cancelled, then
// stops gracefully and returns nil. It closes lis. A nil log discards logs.
func RunEmoji(ctx context.Context, lis net.Listener, log *slog.Logger) error {
	srv := grpc.NewServer()
	demov1.RegisterEmojiServer(srv, newEmojiServer(catalogue))
	orDiscard(log).Info("emoji listening", "addr", lis.Addr().String(), "emojis", len(catalogue))
	return serveGRPC(ctx, lis, srv)
}
