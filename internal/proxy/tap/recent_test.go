package tap

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy/explain"
)

// A client's path can be long and need not be UTF-8 once decoded: the
// decision keeps MaxField bytes of it, and its proto is valid UTF-8, so
// one request cannot make Recent fail.
func TestDecisionOfAHostilePath(t *testing.T) {
	path := explain.Clip("/" + strings.Repeat("\xff\xfe", 10_000))
	d := &explain.Decision{Time: time.Now(), Direction: "inbound", Method: "GET", Authority: "web", Path: path}
	b, err := proto.Marshal(decisionProto(d))
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if len(path) != explain.MaxField || len(b) > 4*explain.MaxField {
		t.Errorf("kept %d bytes of the path, %d in the message; want %d and a message of about that size", len(path), len(b), explain.MaxField)
	}
	if p := decisionProto(d).GetPath(); !utf8.ValidString(p) {
		t.Errorf("path %q is not UTF-8", p)
	}
}
