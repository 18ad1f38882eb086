package inject

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Op is one RFC 6902 JSON Patch operation, as admission webhooks answer.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// asJSON is v as the generic JSON value it marshals to.
func asJSON(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // Kubernetes API types always marshal
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}

// escape makes s one JSON Pointer token (RFC 6901).
func escape(s string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(s) }

func unescape(s string) string { return strings.NewReplacer("~1", "/", "~0", "~").Replace(s) }

// Apply applies the add and remove operations of ops to doc (a decoded
// JSON object), as the API server does with a webhook's patch; `trellis
// inject` uses it on manifests, so the two paths share one patch.
func Apply(doc map[string]any, ops []Op) error {
	for _, op := range ops {
		tokens := strings.Split(op.Path, "/")
		if op.Path == "" || tokens[0] != "" {
			return fmt.Errorf("patch path %q: not a JSON pointer", op.Path)
		}
		if _, err := applyAt(doc, tokens[1:], op); err != nil {
			return fmt.Errorf("patch %s %s: %w", op.Op, op.Path, err)
		}
	}
	return nil
}

// isIndex reports whether s is an RFC 6901 array index: "0", or digits
// without a leading zero.
func isIndex(s string) bool {
	if s == "" || len(s) > 9 || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// applyAt walks to the parent of the last token and changes it; an array
// that grows or shrinks is replaced in its parent, so the walk returns the
// new value of node.
func applyAt(node any, tokens []string, op Op) (any, error) {
	key := unescape(tokens[0])
	last := len(tokens) == 1
	switch n := node.(type) {
	case map[string]any:
		if last {
			switch op.Op {
			case "add":
				n[key] = op.Value
			case "remove":
				if _, ok := n[key]; !ok {
					return nil, fmt.Errorf("no member %q", key)
				}
				delete(n, key)
			default:
				return nil, fmt.Errorf("unsupported operation %q", op.Op)
			}
			return n, nil
		}
		child, ok := n[key]
		if !ok {
			return nil, fmt.Errorf("no member %q", key)
		}
		v, err := applyAt(child, tokens[1:], op)
		if err != nil {
			return nil, err
		}
		n[key] = v
		return n, nil
	case []any:
		i := len(n)
		switch {
		case key == "-" && last && op.Op == "add":
		case !isIndex(key):
			return nil, fmt.Errorf("%q is not an array index", key)
		default:
			i, _ = strconv.Atoi(key)
			if i > len(n) || (i == len(n) && !(last && op.Op == "add")) {
				return nil, fmt.Errorf("index %q out of range", key)
			}
		}
		if !last {
			v, err := applyAt(n[i], tokens[1:], op)
			if err != nil {
				return nil, err
			}
			n[i] = v
			return n, nil
		}
		switch op.Op {
		case "add":
			return append(n[:i], append([]any{op.Value}, n[i:]...)...), nil
		case "remove":
			if i == len(n) {
				return nil, fmt.Errorf("index %q out of range", key)
			}
			return append(n[:i], n[i+1:]...), nil
		}
		return nil, fmt.Errorf("unsupported operation %q", op.Op)
	}
	return nil, fmt.Errorf("%q is inside a value that is neither object nor array", key)
}
