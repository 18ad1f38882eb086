package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxReview bounds an AdmissionReview body; the API server's own request
// limit is 3 MiB.
const maxReview = 4 << 20

// Webhook is the mutating admission webhook: it answers AdmissionReview
// (admission.k8s.io/v1) requests for Pod creation with the patch that
// injects the proxy when the Pod or its namespace asks for it.
type Webhook struct {
	Config Config
	// NamespaceAnnotations returns a namespace's annotations.
	NamespaceAnnotations func(ctx context.Context, namespace string) (map[string]string, error)
	Log                  *slog.Logger
}

func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(rw, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxReview))
	if err != nil {
		http.Error(rw, "reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	review, pod, err := DecodeReview(body)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	var ns map[string]string
	if pod != nil {
		if ns, err = w.NamespaceAnnotations(r.Context(), review.Request.Namespace); err != nil {
			// Without the namespace the decision would be a guess: fail
			// the call, so the webhook's failurePolicy decides (an
			// explicit refusal would reject the Pod whatever the policy).
			w.Log.Warn("reading the namespace failed", "namespace", review.Request.Namespace, "error", err)
			http.Error(rw, fmt.Sprintf("trellis: reading namespace %s: %v", review.Request.Namespace, err), http.StatusInternalServerError)
			return
		}
	}
	resp := w.review(review.Request, pod, ns)
	resp.UID = review.Request.UID
	review.Request, review.Response = nil, resp
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(review)
}

// review decides one request: allowed with the injection patch, allowed
// unchanged, or refused when the Pod's annotations are invalid.
func (w *Webhook) review(req *admissionv1.AdmissionRequest, pod *corev1.Pod, ns map[string]string) *admissionv1.AdmissionResponse {
	allowed := &admissionv1.AdmissionResponse{Allowed: true}
	if pod == nil || !Wanted(pod, ns) {
		return allowed
	}
	ops, err := w.Config.Patch(pod)
	if err != nil {
		return refused(http.StatusBadRequest, "trellis: "+err.Error())
	}
	if len(ops) == 0 {
		return allowed
	}
	patch, _ := json.Marshal(ops)
	pt := admissionv1.PatchTypeJSONPatch
	allowed.Patch, allowed.PatchType = patch, &pt
	w.Log.Info("injected the proxy", "namespace", req.Namespace, "pod", podName(pod), "service_account", pod.Spec.ServiceAccountName)
	return allowed
}

func refused(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg}}
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}

// DecodeReview parses an AdmissionReview request; the Pod is nil when the
// request is not the creation of a v1 Pod (the webhook then allows it
// unchanged).
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, *corev1.Pod, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, nil, fmt.Errorf("decoding the AdmissionReview: %w", err)
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		return nil, nil, fmt.Errorf("%s %s: want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, nil, errors.New("the AdmissionReview has no request")
	}
	k := review.Request.Kind
	if k.Group != "" || k.Version != "v1" || k.Kind != "Pod" || review.Request.SubResource != "" || review.Request.Operation != admissionv1.Create {
		return &review, nil, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		return nil, nil, fmt.Errorf("decoding the Pod: %w", err)
	}
	return &review, &pod, nil
}
