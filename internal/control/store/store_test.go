package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(crashChild(path, os.Getenv(crashRoundEnv)))
	}
	os.Exit(m.Run())
}

// fakeKinds knows "Widget" (namespaced, spec {"size": 1..10}, default 1)
// and "Cluster" (cluster-scoped, any spec).
type fakeKinds struct{}

func (fakeKinds) Namespaced(kind string) bool { return kind == "Widget" }
func (fakeKinds) Known(kind string) bool      { return kind == "Widget" || kind == "Cluster" }

func (fakeKinds) Check(r *Resource) error {
	switch r.Kind {
	case "Cluster":
		return nil
	case "Widget":
		spec := map[string]any{}
		if len(r.Spec) > 0 {
			if err := json.Unmarshal(r.Spec, &spec); err != nil {
				return &ValidationError{Field: "spec", Reason: err.Error()}
			}
		}
		size, ok := spec["size"]
		if !ok {
			spec["size"] = 1
			b, err := json.Marshal(spec)
			if err != nil {
				return err
			}
			r.Spec = b
			return nil
		}
		if n, ok := size.(float64); !ok || n != float64(int(n)) || n < 1 || n > 10 {
			return &ValidationError{Field: "spec.size", Reason: "must be an integer between 1 and 10"}
		}
		return nil
	default:
		return fmt.Errorf("kind: unknown kind %q", r.Kind)
	}
}

func openTest(t *testing.T, path string, o Options) *DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "store.db")
	}
	if o.Kinds == nil {
		o.Kinds = fakeKinds{}
	}
	db, err := Open(path, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func widget(ns, name string, size int, lbls map[string]string) Resource {
	return Resource{
		APIVersion: "trellis.dev/v1",
		Kind:       "Widget",
		Metadata:   Metadata{Name: name, Namespace: ns, Labels: lbls},
		Spec:       json.RawMessage(fmt.Sprintf(`{"size":%d}`, size)),
	}
}

func mustApply(t *testing.T, db *DB, r Resource) Resource {
	t.Helper()
	out, err := db.Apply(context.Background(), r)
	if err != nil {
		t.Fatalf("Apply %s: %v", r.Key(), err)
	}
	return out
}

func TestKeyString(t *testing.T) {
	if got := (Key{"Widget", "ns", "a"}).String(); got != "Widget/ns/a" {
		t.Errorf("namespaced key = %q", got)
	}
	if got := (Key{Kind: "Cluster", Name: "a"}).String(); got != "Cluster/a" {
		t.Errorf("cluster key = %q", got)
	}
}

func TestResourceJSONRoundTrip(t *testing.T) {
	in := Resource{
		APIVersion: "trellis.dev/v1",
		Kind:       "Widget",
		Metadata: Metadata{
			Name: "w", Namespace: "ns",
			Labels:      map[string]string{"app": "web"},
			Annotations: map[string]string{"note": "<hi>"},
			UID:         "0b6c1c1e-7a0e-4c5e-9d1a-0a6f3c2b1d00", ResourceVersion: "42", Generation: 3,
			CreationTimestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		},
		Spec:   json.RawMessage(`{"size":3}`),
		Status: json.RawMessage(`{"ready":true}`),
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"apiVersion"`, `"kind"`, `"metadata"`, `"resourceVersion":"42"`, `"creationTimestamp"`, `"spec"`, `"status"`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON %s lacks %s", b, field)
		}
	}
	var out Resource
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n in  %+v\n out %+v", in, out)
	}
	// Empty optional fields are omitted.
	b, _ = json.Marshal(Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c"}})
	for _, field := range []string{"namespace", "labels", "uid", "spec", "status"} {
		if strings.Contains(string(b), field) {
			t.Errorf("JSON %s should omit %s", b, field)
		}
	}
}

func TestValidation(t *testing.T) {
	long := strings.Repeat("a", 254)
	cases := []struct {
		name  string
		r     Resource
		field string // want ValidationError.Field
		msg   string // want in the error text
	}{
		{"no apiVersion", Resource{Kind: "Widget", Metadata: Metadata{Name: "a", Namespace: "ns"}}, "apiVersion", "apiVersion: required"},
		{"no kind", Resource{APIVersion: "v1", Metadata: Metadata{Name: "a"}}, "kind", "kind: required"},
		{"slash in kind", Resource{APIVersion: "v1", Kind: "a/b", Metadata: Metadata{Name: "a"}}, "kind", "kind: "},
		{"no name", widget("ns", "", 1, nil), "metadata.name", "metadata.name: required"},
		{"bad name", widget("ns", "Bad_Name", 1, nil), "metadata.name", "metadata.name: "},
		{"long name", widget("ns", long, 1, nil), "metadata.name", "metadata.name: "},
		{"no namespace", widget("", "a", 1, nil), "metadata.namespace", "metadata.namespace: required"},
		{"dotted namespace", widget("a.b", "a", 1, nil), "metadata.namespace", "metadata.namespace: must not contain dots"},
		{"cluster with namespace", Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c", Namespace: "ns"}}, "metadata.namespace", "metadata.namespace: must be empty: kind Cluster is not namespaced"},
		{"bad label key", widget("ns", "a", 1, map[string]string{"a b": "x"}), `metadata.labels["a b"]`, `metadata.labels["a b"]: `},
		{"bad label value", widget("ns", "a", 1, map[string]string{"app": "-x"}), `metadata.labels["app"]`, `metadata.labels["app"]: `},
		{"long label value", widget("ns", "a", 1, map[string]string{"app": strings.Repeat("x", 64)}), `metadata.labels["app"]`, "63"},
		{"bad annotation key", Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c", Annotations: map[string]string{"/x": ""}}}, `metadata.annotations["/x"]`, `metadata.annotations["/x"]: `},
		{"spec not JSON", Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c"}, Spec: json.RawMessage(`{`)}, "spec", "spec: must be valid JSON"},
		{"status not JSON", Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c"}, Status: json.RawMessage(`[`)}, "status", "status: must be valid JSON"},
		{"size too big", widget("ns", "a", 11, nil), "spec.size", "spec.size: must be an integer between 1 and 10"},
		{"size too small", widget("ns", "a", 0, nil), "spec.size", "spec.size: "},
		{"unknown kind", Resource{APIVersion: "v1", Kind: "Gadget", Metadata: Metadata{Name: "g"}}, "", `unknown kind "Gadget"`},
		{"unknown kind in a namespace", Resource{APIVersion: "v1", Kind: "Gadget", Metadata: Metadata{Name: "g", Namespace: "ns"}}, "", `unknown kind "Gadget"`},
		{"annotations too large", Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c", Annotations: map[string]string{"a": strings.Repeat("x", 300<<10)}}},
			"metadata.annotations", "must be at most 256 KiB"},
	}
	db := openTest(t, "", Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := db.Apply(context.Background(), tc.r)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Apply error = %v, want a ValidationError", err)
			}
			if ve.Field != tc.field {
				t.Errorf("Field = %q, want %q (err: %v)", ve.Field, tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
	items, rv, err := db.List(context.Background(), "", "", nil)
	if err != nil || len(items) != 0 || rv != 0 || db.ResourceVersion() != 0 {
		t.Errorf("invalid input wrote something: %d items, rv %d/%d, err %v", len(items), rv, db.ResourceVersion(), err)
	}
}

func TestValidationReportsEveryField(t *testing.T) {
	db := openTest(t, "", Options{})
	_, err := db.Apply(context.Background(), Resource{Kind: "Widget", Metadata: Metadata{Name: "A", Labels: map[string]string{"a b": "ok"}}})
	for _, f := range []string{"apiVersion", "metadata.name", "metadata.namespace", `metadata.labels["a b"]`} {
		if err == nil || !strings.Contains(err.Error(), f+": ") {
			t.Errorf("error %v does not name %s", err, f)
		}
	}
}

func TestApplyCreateAndDefaults(t *testing.T) {
	db := openTest(t, "", Options{})
	before := time.Now().Add(-time.Second)
	in := Resource{APIVersion: "trellis.dev/v1", Kind: "Widget", Metadata: Metadata{Name: "w", Namespace: "ns", UID: "ignored"}}
	out := mustApply(t, db, in)
	m := out.Metadata
	if m.ResourceVersion != "1" || m.Generation != 1 || len(m.UID) != 36 || m.UID == "ignored" {
		t.Errorf("metadata = %+v", m)
	}
	if m.CreationTimestamp.Before(before) || m.CreationTimestamp.After(time.Now()) {
		t.Errorf("creationTimestamp = %v", m.CreationTimestamp)
	}
	if string(out.Spec) != `{"size":1}` {
		t.Errorf("defaulted spec = %s", out.Spec)
	}
	if in.Spec != nil {
		t.Errorf("Apply modified the caller's object")
	}
	got, err := db.Get(context.Background(), out.Key())
	if err != nil || !reflect.DeepEqual(got, out) {
		t.Errorf("Get = %+v, %v; want %+v", got, err, out)
	}
	other := mustApply(t, db, widget("ns", "w2", 2, nil))
	if other.Metadata.UID == m.UID || other.Metadata.ResourceVersion != "2" {
		t.Errorf("second object metadata = %+v", other.Metadata)
	}
}

func TestApplyUpdateSemantics(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "", Options{})
	w := widget("ns", "w", 1, map[string]string{"app": "web"})
	w.Metadata.Annotations = map[string]string{"a": "1"}
	w.Status = json.RawMessage(`{"ready":false}`)
	v1 := mustApply(t, db, w)

	// Identical apply (even with different whitespace) is a no-op.
	same := w
	same.Spec = json.RawMessage(" { \"size\" : 1 } ")
	if got := mustApply(t, db, same); !reflect.DeepEqual(got, v1) || db.ResourceVersion() != 1 {
		t.Errorf("no-op apply changed the object: %+v (rv %d)", got.Metadata, db.ResourceVersion())
	}
	// Specs the JSON encoder escapes compare equal too.
	html := Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c"}, Spec: json.RawMessage(`{"s":"<a&b>"}`)}
	h1 := mustApply(t, db, html)
	if h2 := mustApply(t, db, html); h2.Metadata.ResourceVersion != h1.Metadata.ResourceVersion {
		t.Errorf("re-applying an escaped spec bumped rv %s -> %s", h1.Metadata.ResourceVersion, h2.Metadata.ResourceVersion)
	}
	if err := db.Delete(ctx, html.Key()); err != nil {
		t.Fatal(err)
	}
	// Without status: status kept, still a no-op.
	noStatus := w
	noStatus.Status = nil
	if got := mustApply(t, db, noStatus); got.Metadata.ResourceVersion != "1" || string(got.Status) != `{"ready":false}` {
		t.Errorf("apply without status: %+v status %s", got.Metadata, got.Status)
	}
	// Status-only change: new rv, same generation.
	st := noStatus
	st.Status = json.RawMessage(`{"ready":true}`)
	v2 := mustApply(t, db, st)
	if v2.Metadata.ResourceVersion != "4" || v2.Metadata.Generation != 1 || string(v2.Status) != `{"ready":true}` {
		t.Errorf("status update: %+v status %s", v2.Metadata, v2.Status)
	}
	// Spec change: generation +1; labels and annotations fully replaced; uid and timestamp kept.
	sp := widget("ns", "w", 5, map[string]string{"tier": "db"})
	v3 := mustApply(t, db, sp)
	m := v3.Metadata
	if m.ResourceVersion != "5" || m.Generation != 2 || m.UID != v1.Metadata.UID || !m.CreationTimestamp.Equal(v1.Metadata.CreationTimestamp) {
		t.Errorf("spec update metadata: %+v", m)
	}
	if !reflect.DeepEqual(m.Labels, map[string]string{"tier": "db"}) || m.Annotations != nil || string(v3.Status) != `{"ready":true}` {
		t.Errorf("spec update labels %v annotations %v status %s", m.Labels, m.Annotations, v3.Status)
	}
	// Labels-only change: new rv, same generation.
	lb := sp
	lb.Metadata.Labels = nil
	if v4 := mustApply(t, db, lb); v4.Metadata.ResourceVersion != "6" || v4.Metadata.Generation != 2 || v4.Metadata.Labels != nil {
		t.Errorf("label update: %+v", v4.Metadata)
	}
	got, err := db.Get(ctx, sp.Key())
	if err != nil || got.Metadata.ResourceVersion != "6" {
		t.Errorf("Get after updates: %+v, %v", got.Metadata, err)
	}
}

func TestApplyConflict(t *testing.T) {
	db := openTest(t, "", Options{})
	v1 := mustApply(t, db, widget("ns", "w", 1, nil))
	v2 := mustApply(t, db, widget("ns", "w", 2, nil))
	cases := []struct {
		name    string
		r       Resource
		wantErr error
	}{
		{"stale rv", withRV(widget("ns", "w", 3, nil), v1.Metadata.ResourceVersion), ErrConflict},
		{"unknown rv", withRV(widget("ns", "w", 3, nil), "999"), ErrConflict},
		{"rv on missing object", withRV(widget("ns", "other", 3, nil), "1"), ErrConflict},
		{"current rv", withRV(widget("ns", "w", 3, nil), v2.Metadata.ResourceVersion), nil},
		{"no rv", widget("ns", "w", 4, nil), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := db.ResourceVersion()
			_, err := db.Apply(context.Background(), tc.r)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Apply error = %v, want %v", err, tc.wantErr)
			}
			if err != nil && (!strings.Contains(err.Error(), tc.r.Key().String()) || db.ResourceVersion() != before) {
				t.Errorf("conflict error %q lacks key or wrote (rv %d -> %d)", err, before, db.ResourceVersion())
			}
		})
	}
}

func withRV(r Resource, rv string) Resource {
	r.Metadata.ResourceVersion = rv
	return r
}

func TestListSelectorsAndNamespaces(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "", Options{})
	// "a-b" sorts before "a/" in bytes; List must still sort by namespace string.
	for _, w := range []Resource{
		widget("a-b", "x", 1, map[string]string{"app": "web", "tier": "front"}),
		widget("a", "z", 1, map[string]string{"app": "web", "tier": "db"}),
		widget("a", "y", 1, map[string]string{"app": "api"}),
		widget("b", "x", 1, nil),
	} {
		mustApply(t, db, w)
	}
	mustApply(t, db, Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c1", Labels: map[string]string{"app": "web"}}})
	cases := []struct {
		kind, ns, sel string
		want          []string
	}{
		{"Widget", "", "", []string{"a/y", "a/z", "a-b/x", "b/x"}},
		{"Widget", "a", "", []string{"a/y", "a/z"}},
		{"Widget", "a-b", "", []string{"a-b/x"}},
		{"Widget", "nope", "", nil},
		{"Widget", "", "app=web", []string{"a/z", "a-b/x"}},
		{"Widget", "", "app=web,tier!=db", []string{"a-b/x"}},
		{"Widget", "", "app in (api,web)", []string{"a/y", "a/z", "a-b/x"}},
		{"Widget", "", "!app", []string{"b/x"}},
		{"Widget", "a", "tier", []string{"a/z"}},
		{"Cluster", "", "", []string{"/c1"}},
		{"Cluster", "", "app=api", nil},
		{"Gadget", "", "", nil},
		{"", "", "app=web", []string{"/c1", "a/z", "a-b/x"}},
	}
	for _, tc := range cases {
		t.Run(tc.kind+"/"+tc.ns+"?"+tc.sel, func(t *testing.T) {
			var sel labels.Selector
			if tc.sel != "" {
				var err error
				if sel, err = labels.Parse(tc.sel); err != nil {
					t.Fatal(err)
				}
			}
			items, rv, err := db.List(ctx, tc.kind, tc.ns, sel)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, it := range items {
				got = append(got, it.Metadata.Namespace+"/"+it.Metadata.Name)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("List = %v, want %v", got, tc.want)
			}
			if rv != 5 {
				t.Errorf("List rv = %d, want 5", rv)
			}
		})
	}
}

func TestGetAndDelete(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "", Options{})
	w := mustApply(t, db, widget("ns", "w", 1, nil))
	cases := []struct {
		name string
		k    Key
	}{
		{"wrong namespace", Key{"Widget", "other", "w"}},
		{"wrong name", Key{"Widget", "ns", "x"}},
		{"wrong kind", Key{"Cluster", "ns", "w"}},
		{"cluster-scoped key for namespaced object", Key{Kind: "Widget", Name: "w"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := db.Get(ctx, tc.k); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tc.k.String()) {
				t.Errorf("Get(%s) error = %v, want ErrNotFound naming the key", tc.k, err)
			}
			if err := db.Delete(ctx, tc.k); !errors.Is(err, ErrNotFound) {
				t.Errorf("Delete(%s) error = %v, want ErrNotFound", tc.k, err)
			}
		})
	}
	if db.ResourceVersion() != 1 {
		t.Errorf("failed deletes changed rv to %d", db.ResourceVersion())
	}
	if err := db.Delete(ctx, w.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get(ctx, w.Key()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after delete: %v", err)
	}
	if err := db.Delete(ctx, w.Key()); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if db.ResourceVersion() != 2 {
		t.Errorf("rv after delete = %d, want 2", db.ResourceVersion())
	}
	// Re-creating gets a fresh uid and generation 1.
	again := mustApply(t, db, widget("ns", "w", 1, nil))
	if again.Metadata.UID == w.Metadata.UID || again.Metadata.Generation != 1 || again.Metadata.ResourceVersion != "3" {
		t.Errorf("re-created: %+v", again.Metadata)
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nested", "dir", "store.db")
	db, err := Open(path, Options{Kinds: fakeKinds{}})
	if err != nil {
		t.Fatal(err)
	}
	w := mustApply(t, db, widget("ns", "w", 3, map[string]string{"app": "web"}))
	c := mustApply(t, db, Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c"}, Status: json.RawMessage(`{"ok":true}`)})
	mustApply(t, db, widget("ns", "gone", 1, nil))
	if err := db.Delete(ctx, Key{"Widget", "ns", "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get(ctx, w.Key()); err == nil {
		t.Error("Get on closed DB succeeded")
	}
	if _, err := db.Apply(ctx, widget("ns", "x", 1, nil)); err == nil {
		t.Error("Apply on closed DB succeeded")
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{{path, 0o600}, {filepath.Dir(path), 0o700 | os.ModeDir}} {
		if fi, err := os.Stat(p.path); err != nil || fi.Mode() != p.mode {
			t.Errorf("%s mode = %v, want %v (%v)", p.path, fi.Mode(), p.mode, err)
		}
	}

	db = openTest(t, path, Options{})
	if db.ResourceVersion() != 4 {
		t.Errorf("rv after reopen = %d, want 4", db.ResourceVersion())
	}
	for _, want := range []Resource{w, c} {
		got, err := db.Get(ctx, want.Key())
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Get(%s) after reopen = %+v, %v; want %+v", want.Key(), got, err, want)
		}
	}
	if _, err := db.Get(ctx, Key{"Widget", "ns", "gone"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted object after reopen: %v", err)
	}
	if next := mustApply(t, db, widget("ns", "w2", 1, nil)); next.Metadata.ResourceVersion != "5" {
		t.Errorf("rv after reopen continues at %s, want 5", next.Metadata.ResourceVersion)
	}
}

func TestContextCanceled(t *testing.T) {
	db := openTest(t, "", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.Apply(ctx, widget("ns", "w", 1, nil)); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply: %v", err)
	}
	if _, _, err := db.List(ctx, "Widget", "", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("List: %v", err)
	}
	if _, err := db.Watch(ctx, "", 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch: %v", err)
	}
	if db.ResourceVersion() != 0 {
		t.Error("canceled Apply wrote")
	}
}
