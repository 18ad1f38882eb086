package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

func reviewOf(t testing.TB, pod *corev1.Pod, ns string) []byte {
	raw, _ := json.Marshal(pod)
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: types.UID("uid-1"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: ns, Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: raw}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// webhook serves the webhook on a real listener; namespace "meshed" asks
// for injection, "broken" cannot be read.
func webhook(t *testing.T) string {
	w := &Webhook{Config: testConfig(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NamespaceAnnotations: func(_ context.Context, ns string) (map[string]string, error) {
			switch ns {
			case "meshed":
				return map[string]string{AnnotationInject: "enabled"}, nil
			case "broken":
				return nil, errors.New("the API server is away")
			}
			return nil, nil
		}}
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	return srv.URL
}

func post(t *testing.T, url string, body []byte) (int, *admissionv1.AdmissionResponse) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(b, &review); err != nil || review.Kind != "AdmissionReview" || review.Response == nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	if review.Response.UID != "uid-1" {
		t.Errorf("answer for UID %q", review.Response.UID)
	}
	return resp.StatusCode, review.Response
}

func TestWebhookInjectsWhatItIsAskedTo(t *testing.T) {
	url := webhook(t)
	pod := &corev1.Pod{Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "web"}}}}
	pod.GenerateName = "web-"

	_, resp := post(t, url, reviewOf(t, pod, "meshed"))
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v", resp)
	}
	var ops []Op
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	if got := patched(t, pod, func(*corev1.Pod) ([]Op, error) { return ops, nil }); !Injected(got) {
		t.Fatal("the patch did not inject the proxy")
	}

	// Not asked: namespace silent, Pod opting out.
	if _, resp := post(t, url, reviewOf(t, pod, "plain")); !resp.Allowed || resp.Patch != nil {
		t.Errorf("unannotated namespace: %+v", resp)
	}
	out := pod.DeepCopy()
	out.Annotations = map[string]string{AnnotationInject: "disabled"}
	if _, resp := post(t, url, reviewOf(t, out, "meshed")); !resp.Allowed || resp.Patch != nil {
		t.Errorf("Pod opted out: %+v", resp)
	}
	// A bad annotation is refused, naming it; an unreadable namespace too.
	bad := pod.DeepCopy()
	bad.Annotations = map[string]string{AnnotationOpaquePorts: "http"}
	if _, resp := post(t, url, reviewOf(t, bad, "meshed")); resp.Allowed || !strings.Contains(resp.Result.Message, AnnotationOpaquePorts) {
		t.Errorf("bad annotation: %+v", resp)
	}
	// An unreadable namespace fails the call, so the failure policy decides.
	if code, _ := post(t, url, reviewOf(t, pod, "broken")); code != http.StatusInternalServerError {
		t.Errorf("namespace unreadable: status %d; want 500", code)
	}
	// What is not an AdmissionReview is a 400; other methods a 405.
	if code, _ := post(t, url, []byte(`{"kind":"Pod"}`)); code != http.StatusBadRequest {
		t.Errorf("not a review: %d", code)
	}
	if resp, err := http.Get(url); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %v %v", resp.StatusCode, err)
	}
}

func FuzzDecodeReview(f *testing.F) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web"}}}}
	f.Add(reviewOf(f, pod, "meshed"))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"version":"v1","kind":"Pod"},"object":null}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"version":"v1","kind":"Pod"},"object":{"metadata":{"annotations":{}},"spec":{"initContainers":[],"volumes":[]}}}}`))
	c := testConfig()
	f.Fuzz(func(t *testing.T, b []byte) {
		review, pod, err := DecodeReview(b)
		if err != nil {
			return
		}
		if review == nil || review.Request == nil {
			t.Fatal("no request and no error")
		}
		if pod == nil {
			return
		}
		// Whatever decoded, patching it either fails cleanly or yields a
		// patch that applies to the Pod.
		ops, err := c.Patch(pod)
		if err != nil {
			return
		}
		raw, _ := json.Marshal(pod)
		var doc map[string]any
		json.Unmarshal(raw, &doc)
		if err := Apply(doc, ops); err != nil {
			t.Fatalf("the patch does not apply to the Pod it was made for: %v", err)
		}
	})
}
