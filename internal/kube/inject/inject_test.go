package inject

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func testConfig() Config {
	return Config{
		ProxyImage: "localhost/trellis-proxy:v0.0.0-test", ImagePullPolicy: corev1.PullIfNotPresent, Version: "v0.0.0-test",
		TrustDomain: "cluster.local", ClusterDomain: "cluster.local", TrustAnchorsPEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		IdentityAddr: "trellis-identity.trellis.svc.cluster.local:8080", DestinationAddr: "trellis-destination.trellis.svc.cluster.local:8086",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("20Mi")}},
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/kube/inject/ -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./internal/kube/inject/ -update regenerates it):\n%s", name, got)
	}
}

// decodeAll decodes a YAML stream into generic documents.
func decodeAll(t *testing.T, b []byte) []any {
	t.Helper()
	var docs []any
	for _, d := range strings.Split(string(b), "\n---\n") {
		var v any
		if err := yaml.Unmarshal([]byte(d), &v); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, v)
	}
	return docs
}

// Manifests on disk get the same patch as the webhook's; injecting twice
// changes nothing; uninjecting gives back the original documents.
func TestManifestsGolden(t *testing.T) {
	c := testConfig()
	for _, tc := range []struct {
		in      string
		changed int
	}{{"app.yaml", 1}, {"tuned.yaml", 2}} {
		t.Run(tc.in, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join("testdata", tc.in))
			if err != nil {
				t.Fatal(err)
			}
			var injected bytes.Buffer
			res, err := Manifests(bytes.NewReader(orig), &injected, c.Patch)
			if err != nil {
				t.Fatal(err)
			}
			if res.Changed != tc.changed {
				t.Errorf("changed %d Pod templates; want %d", res.Changed, tc.changed)
			}
			golden(t, strings.TrimSuffix(tc.in, ".yaml")+".injected.golden", injected.Bytes())

			var again bytes.Buffer
			if res, err := Manifests(bytes.NewReader(injected.Bytes()), &again, c.Patch); err != nil || res.Changed != 0 {
				t.Fatalf("injecting again changed %d templates (%v)", res.Changed, err)
			}
			var back bytes.Buffer
			uninject := func(p *corev1.Pod) ([]Op, error) { return UninjectPatch(p), nil }
			if _, err := Manifests(bytes.NewReader(injected.Bytes()), &back, uninject); err != nil {
				t.Fatal(err)
			}
			if got, want := decodeAll(t, back.Bytes()), decodeAll(t, orig); !reflect.DeepEqual(got, want) {
				t.Errorf("uninjected:\n%s\nwant the original:\n%s", back.Bytes(), orig)
			}
		})
	}
}

// The injected Pod, decoded as Kubernetes would: the proxy is a native
// sidecar after the iptables init container and before the Pod's own, with
// the least privilege each needs.
func TestInjectedPodShape(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{ServiceAccountName: "web",
		InitContainers: []corev1.Container{{Name: "migrate"}}, Containers: []corev1.Container{{Name: "web"}}}}
	got := patched(t, pod, testConfig().Patch)
	var names []string
	for _, c := range got.Spec.InitContainers {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "trellis-init,trellis-proxy,migrate" {
		t.Fatalf("init containers %v", names)
	}
	initC, proxy := got.Spec.InitContainers[0], got.Spec.InitContainers[1]
	if caps := initC.SecurityContext.Capabilities; len(caps.Add) != 2 || caps.Drop[0] != "ALL" || initC.Args[0] != "init" {
		t.Errorf("init container %+v", initC)
	}
	sc := proxy.SecurityContext
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the proxy is not a native sidecar")
	}
	if *sc.RunAsUser != ProxyUID || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Add) > 0 {
		t.Errorf("proxy security context %+v", sc)
	}
	if v := got.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken; v.Audience != TokenAudience {
		t.Errorf("token audience %q", v.Audience)
	}
	if !strings.Contains(strings.Join(proxy.Args, " "), "--identity=spiffe://cluster.local/ns/$(TRELLIS_POD_NAMESPACE)/sa/$(TRELLIS_POD_SERVICE_ACCOUNT)") {
		t.Errorf("proxy args %v", proxy.Args)
	}
	if got.Annotations[AnnotationProxyVersion] != "v0.0.0-test" || !Injected(got) {
		t.Error("not marked injected")
	}
}

// patched applies change's patch to pod the way the API server does.
func patched(t *testing.T, pod *corev1.Pod, change func(*corev1.Pod) ([]Op, error)) *corev1.Pod {
	t.Helper()
	ops, err := change(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(pod)
	var doc map[string]any
	json.Unmarshal(b, &doc)
	if err := Apply(doc, ops); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(doc)
	var out corev1.Pod
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestBadAnnotationsAreNamed(t *testing.T) {
	for key, value := range map[string]string{
		AnnotationOpaquePorts:       "5432,postgres",
		AnnotationSkipInboundPorts:  "99999",
		AnnotationSkipOutboundPorts: "x",
		AnnotationSkipSubnets:       "10.0.0.0/33",
		AnnotationLogLevel:          "loud",
		AnnotationCPURequest:        "lots",
		AnnotationMemoryLimit:       "1Mi", // below the default request
	} {
		pod := &corev1.Pod{}
		pod.Annotations = map[string]string{key: value}
		_, err := testConfig().Patch(pod)
		if err == nil {
			t.Errorf("%s: %q accepted", key, value)
			continue
		}
		if want := key; key == AnnotationMemoryLimit {
			want = "memory request"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v; want it named", key, err)
			}
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%q: %v; want the annotation named", key, value, err)
		}
	}
}

func TestWanted(t *testing.T) {
	enabled := map[string]string{AnnotationInject: "enabled"}
	disabled := map[string]string{AnnotationInject: "disabled"}
	for _, tc := range []struct {
		name    string
		pod, ns map[string]string
		host    bool
		want    bool
	}{
		{"namespace enabled", nil, enabled, false, true},
		{"pod disabled wins", disabled, enabled, false, false},
		{"pod enabled wins", enabled, nil, false, true},
		{"nothing said", nil, nil, false, false},
		{"host network never", enabled, enabled, true, false},
	} {
		pod := &corev1.Pod{Spec: corev1.PodSpec{HostNetwork: tc.host}}
		pod.Annotations = tc.pod
		if got := Wanted(pod, tc.ns); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}

// Apply follows RFC 6902 and 6901 for the operations it takes, and refuses
// what they do not allow instead of guessing (or panicking).
func TestApplyPointers(t *testing.T) {
	doc := func() map[string]any {
		return map[string]any{"a": []any{"x", "y"}, "m": map[string]any{"k/1": "v"}}
	}
	for _, tc := range []struct {
		op   Op
		want string // JSON of the result, or "error"
	}{
		{Op{Op: "add", Path: "/a/0", Value: "w"}, `{"a":["w","x","y"],"m":{"k/1":"v"}}`},
		{Op{Op: "add", Path: "/a/-", Value: "z"}, `{"a":["x","y","z"],"m":{"k/1":"v"}}`},
		{Op{Op: "add", Path: "/a/2", Value: "z"}, `{"a":["x","y","z"],"m":{"k/1":"v"}}`},
		{Op{Op: "remove", Path: "/a/1"}, `{"a":["x"],"m":{"k/1":"v"}}`},
		{Op{Op: "remove", Path: "/m/k~11"}, `{"a":["x","y"],"m":{}}`},
		{Op{Op: "add", Path: "/a/-/b", Value: 1}, "error"},
		{Op{Op: "add", Path: "/a/01", Value: 1}, "error"},
		{Op{Op: "add", Path: "/a/+1", Value: 1}, "error"},
		{Op{Op: "remove", Path: "/a/2"}, "error"},
		{Op{Op: "remove", Path: "/nope"}, "error"},
		{Op{Op: "replace", Path: "/m"}, "error"},
		{Op{Op: "add", Path: "a"}, "error"},
	} {
		d := doc()
		err := Apply(d, []Op{tc.op})
		got := "error"
		if err == nil {
			b, _ := json.Marshal(d)
			got = string(b)
		}
		if got != tc.want {
			t.Errorf("%+v: %s (%v); want %s", tc.op, got, err, tc.want)
		}
	}
}
