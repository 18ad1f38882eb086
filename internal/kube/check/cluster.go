package check

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/internal/kube/inject"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// The control plane's objects the checks look at (charts/trellis-control-plane).
const (
	Namespace       = "trellis"
	anchorsConfig   = "trellis-trust-anchors"
	issuerSecret    = "trellis-identity-issuer"
	injectorSecret  = "trellis-injector-tls"
	injectorService = "trellis-injector"
	webhookConfig   = "trellis-proxy-injector-" + Namespace
)

// Components are the control plane's Deployments, trellis-<component>.
var Components = []string{"identity", "destination", "injector"}

// Optional are the Deployments `trellis install` adds on request
// (--prometheus).
var Optional = []string{"prometheus"}

// MinimumMinor is the oldest Kubernetes 1.x Trellis runs on: native
// sidecars (init containers with restartPolicy Always) are on by default
// from 1.29.
const MinimumMinor = 29

// Env is what the checks share: how to reach the cluster and what to
// expect of it.
type Env struct {
	// Config loads the client configuration (kubeconfig and context).
	Config func() (*rest.Config, error)
	// Version is the CLI's: the control plane and proxies should match it.
	Version string
	// ExpiryWarning fails certificates expiring within it.
	ExpiryWarning time.Duration
	// ProxyNamespace limits the proxy checks to one namespace ("" is all).
	ProxyNamespace string
	Now            func() time.Time

	client kubernetes.Interface
}

// KubernetesAPI checks that the cluster answers and is recent enough.
func (e *Env) KubernetesAPI() []Check {
	const cat = "kubernetes-api"
	return []Check{
		{Category: cat, Description: "can initialize the client", Fatal: true, Hint: "--kubeconfig, $KUBECONFIG or ~/.kube/config, and --context",
			Run: func(context.Context) error {
				cfg, err := e.Config()
				if err != nil {
					return err
				}
				cfg.UserAgent = "trellis-check"
				e.client, err = kubernetes.NewForConfig(cfg)
				return err
			}},
		{Category: cat, Description: "can query the Kubernetes API", Fatal: true, Run: func(context.Context) error {
			_, err := e.client.Discovery().ServerVersion()
			return err
		}},
		{Category: cat, Description: fmt.Sprintf("is running Kubernetes 1.%d or later (native sidecars)", MinimumMinor), Run: func(context.Context) error {
			v, err := e.client.Discovery().ServerVersion()
			if err != nil {
				return err
			}
			minor, err := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
			if err != nil || v.Major != "1" {
				return fmt.Errorf("cannot read the version %q.%q", v.Major, v.Minor)
			}
			if minor < MinimumMinor {
				return fmt.Errorf("the cluster runs %s", v.GitVersion)
			}
			return nil
		}},
	}
}

// Pre checks that Trellis can be installed.
func (e *Env) Pre() []Check {
	const cat = "pre-install"
	return []Check{
		{Category: cat, Description: "can create the control plane's objects", Hint: "trellis install needs cluster-admin-like rights once",
			Run: func(ctx context.Context) error {
				var missing []string
				for _, r := range []authzv1.ResourceAttributes{
					{Verb: "create", Resource: "namespaces"},
					{Verb: "create", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"},
					{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
					{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
					{Verb: "create", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations"},
					{Verb: "create", Group: "apps", Resource: "deployments", Namespace: Namespace},
					{Verb: "create", Resource: "secrets", Namespace: Namespace},
				} {
					rev, err := e.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
						&authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &r}}, metav1.CreateOptions{})
					if err != nil {
						return err
					}
					if !rev.Status.Allowed {
						missing = append(missing, r.Verb+" "+strings.TrimPrefix(r.Group+"/"+r.Resource, "/"))
					}
				}
				if len(missing) > 0 {
					return fmt.Errorf("not allowed: %s", strings.Join(missing, ", "))
				}
				return nil
			}},
		{Category: cat, Description: "the control plane namespace does not exist yet", Run: func(ctx context.Context) error {
			_, err := e.client.CoreV1().Namespaces().Get(ctx, Namespace, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return nil
			case err != nil:
				return err
			}
			return fmt.Errorf("namespace %s exists: Trellis is installed (trellis upgrade), or remove it first (trellis uninstall | kubectl delete --ignore-not-found -f -)", Namespace)
		}},
	}
}

// CRDs checks the CustomResourceDefinitions Trellis reads.
func (e *Env) CRDs() []Check {
	return []Check{{Category: "trellis-crds", Description: "the Gateway API HTTPRoute and GRPCRoute CRDs are installed", Retry: true,
		Hint: "trellis install --crds | kubectl apply -f -",
		Run: func(context.Context) error {
			list, err := e.client.Discovery().ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
			if err != nil {
				return fmt.Errorf("gateway.networking.k8s.io/v1: %w", err)
			}
			var missing []string
			for _, want := range []string{"httproutes", "grpcroutes"} {
				if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
					missing = append(missing, want)
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("gateway.networking.k8s.io/v1 has no %s", strings.Join(missing, ", "))
			}
			return nil
		}}}
}

// ControlPlane checks the control plane's Deployments.
func (e *Env) ControlPlane() []Check {
	const cat = "trellis-control-plane"
	return []Check{
		{Category: cat, Description: "the control plane namespace exists", Fatal: true, Hint: "trellis install | kubectl apply -f -",
			Run: func(ctx context.Context) error {
				_, err := e.client.CoreV1().Namespaces().Get(ctx, Namespace, metav1.GetOptions{})
				return err
			}},
		{Category: cat, Description: "the control plane's Deployments are ready", Retry: true, Run: func(ctx context.Context) error {
			var problems []string
			for _, d := range e.deployments(ctx, &problems) {
				if p := notReady(d); p != "" {
					problems = append(problems, d.Name+": "+p)
				}
			}
			return joined(problems)
		}},
		{Category: cat, Description: "the control plane runs the CLI's version", Warning: true, Run: func(ctx context.Context) error {
			var problems []string
			for _, d := range e.deployments(ctx, &problems) {
				if v := d.Labels["app.kubernetes.io/version"]; v != e.Version {
					problems = append(problems, fmt.Sprintf("%s is %s, the CLI %s", d.Name, v, e.Version))
				}
			}
			return joined(problems)
		}},
	}
}

// deployments are the control plane's Deployments: every one of
// Components, and the optional ones installed.
func (e *Env) deployments(ctx context.Context, problems *[]string) []appsv1.Deployment {
	var out []appsv1.Deployment
	for _, c := range slices.Concat(Components, Optional) {
		d, err := e.client.AppsV1().Deployments(Namespace).Get(ctx, "trellis-"+c, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err) && slices.Contains(Optional, c):
		case err != nil:
			*problems = append(*problems, err.Error())
		default:
			out = append(out, *d)
		}
	}
	return out
}

// notReady says why a Deployment is not rolled out and available, or "".
func notReady(d appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	switch {
	case s.ObservedGeneration < d.Generation:
		return "its new spec is not observed yet"
	case s.UpdatedReplicas < want:
		return fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, want)
	case s.AvailableReplicas < want:
		return fmt.Sprintf("%d of %d replicas available", s.AvailableReplicas, want)
	}
	return ""
}

// Identity checks the trust anchors and the issuer.
func (e *Env) Identity() []Check {
	const cat = "trellis-identity"
	var anchors []*x509.Certificate
	return []Check{
		{Category: cat, Description: "the trust anchors are valid", Fatal: true, Run: func(ctx context.Context) error {
			cm, err := e.client.CoreV1().ConfigMaps(Namespace).Get(ctx, anchorsConfig, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if anchors, err = pki.ParseCertificates([]byte(cm.Data["ca.crt"])); err != nil {
				return fmt.Errorf("the ConfigMap %s/%s ca.crt: %w", Namespace, anchorsConfig, err)
			}
			return e.validFor(anchors, "trust anchor")
		}},
		{Category: cat, Description: "the issuer is signed by the trust anchors and valid", Hint: "rotate the issuer: a new certificate and key in Secret trellis/" + issuerSecret,
			Run: func(ctx context.Context) error {
				s, err := e.client.CoreV1().Secrets(Namespace).Get(ctx, issuerSecret, metav1.GetOptions{})
				if err != nil {
					return err
				}
				chain, err := pki.ParseCertificates(s.Data["tls.crt"])
				if err != nil {
					return fmt.Errorf("the Secret %s/%s tls.crt: %w", Namespace, issuerSecret, err)
				}
				key, err := pki.ParseKey(s.Data["tls.key"])
				if err != nil {
					return fmt.Errorf("the Secret %s/%s tls.key: %w", Namespace, issuerSecret, err)
				}
				if _, err := pki.NewCA(anchors, chain, key, e.Now()); err != nil {
					return err
				}
				return e.validFor(chain[:1], "issuer")
			}},
	}
}

// validFor fails certificates that expire within the warning window.
func (e *Env) validFor(certs []*x509.Certificate, what string) error {
	now := e.Now()
	for _, c := range certs {
		switch left := c.NotAfter.Sub(now); {
		case left <= 0:
			return fmt.Errorf("the %s %q expired at %s", what, c.Subject.CommonName, c.NotAfter.Format(time.RFC3339))
		case left < e.ExpiryWarning:
			return fmt.Errorf("the %s %q expires at %s, in %s: within the %s warning window", what, c.Subject.CommonName,
				c.NotAfter.Format(time.RFC3339), human(left), human(e.ExpiryWarning))
		case c.NotBefore.After(now):
			return fmt.Errorf("the %s %q is not valid before %s", what, c.Subject.CommonName, c.NotBefore.Format(time.RFC3339))
		}
	}
	return nil
}

// human is d in days when it is at least two, else in hours and minutes.
func human(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	return d.Round(time.Minute).String()
}

// Injector checks the webhook: its certificate, and that the API server
// gets answers from it.
func (e *Env) Injector() []Check {
	const cat = "trellis-injector"
	return []Check{
		{Category: cat, Description: "the webhook's certificate is valid for its Service", Run: func(ctx context.Context) error {
			wh, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookConfig, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(wh.Webhooks) == 0 {
				return fmt.Errorf("MutatingWebhookConfiguration %s has no webhook", webhookConfig)
			}
			ca, err := pki.ParseCertificates(wh.Webhooks[0].ClientConfig.CABundle)
			if err != nil {
				return fmt.Errorf("MutatingWebhookConfiguration %s caBundle: %w", webhookConfig, err)
			}
			s, err := e.client.CoreV1().Secrets(Namespace).Get(ctx, injectorSecret, metav1.GetOptions{})
			if err != nil {
				return err
			}
			certs, err := pki.ParseCertificates(s.Data["tls.crt"])
			if err != nil {
				return fmt.Errorf("the Secret %s/%s tls.crt: %w", Namespace, injectorSecret, err)
			}
			roots := x509.NewCertPool()
			for _, c := range ca {
				roots.AddCert(c)
			}
			host := injectorService + "." + Namespace + ".svc"
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: host, CurrentTime: e.Now()}); err != nil {
				return fmt.Errorf("the injector's certificate, verified with the webhook's caBundle for %s: %w", host, err)
			}
			return e.validFor(certs[:1], "injector certificate")
		}},
		{Category: cat, Description: "the injector answers the API server", Retry: true, Run: func(ctx context.Context) error {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "trellis-check-", Annotations: map[string]string{inject.AnnotationInject: inject.Enabled}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "check", Image: "trellis-check"}}},
			}
			got, err := e.client.CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				return fmt.Errorf("a dry-run Pod in namespace default: %w", err)
			}
			if inject.Injected(got) {
				return nil
			}
			why := "the API server did not call it or it did not answer"
			if n, err := e.readyEndpoints(ctx, injectorService); err == nil && n == 0 {
				why = "Service " + Namespace + "/" + injectorService + " has no ready endpoint"
			}
			return fmt.Errorf("a dry-run Pod annotated %s: %s was created without the proxy: %s", inject.AnnotationInject, inject.Enabled, why)
		}},
	}
}

// readyEndpoints counts the ready endpoints of a control-plane Service.
func (e *Env) readyEndpoints(ctx context.Context, service string) (int, error) {
	slices, err := e.client.DiscoveryV1().EndpointSlices(Namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + service})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range slices.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				n++
			}
		}
	}
	return n, nil
}

// Proxies checks the meshed Pods' proxies.
func (e *Env) Proxies() []Check {
	const cat = "trellis-proxy"
	return []Check{
		{Category: cat, Description: "every meshed Pod's proxy is ready", Retry: true, Run: func(ctx context.Context) error {
			pods, err := e.pods(ctx)
			if err != nil {
				return err
			}
			var problems []string
			for _, p := range pods {
				if !inject.Injected(&p) || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
					continue
				}
				if why := proxyNotReady(p); why != "" {
					problems = append(problems, p.Namespace+"/"+p.Name+": "+why)
				}
			}
			return joined(problems)
		}},
		{Category: cat, Description: "every proxy runs the CLI's version", Warning: true, Run: func(ctx context.Context) error {
			pods, err := e.pods(ctx)
			if err != nil {
				return err
			}
			var problems []string
			for _, p := range pods {
				if v := p.Annotations[inject.AnnotationProxyVersion]; inject.Injected(&p) && v != e.Version {
					problems = append(problems, fmt.Sprintf("%s/%s runs %s, the CLI %s", p.Namespace, p.Name, v, e.Version))
				}
			}
			return joined(problems)
		}},
	}
}

func (e *Env) pods(ctx context.Context) ([]corev1.Pod, error) {
	list, err := e.client.CoreV1().Pods(e.ProxyNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// proxyNotReady says why a meshed Pod's proxy is not ready, or "".
func proxyNotReady(p corev1.Pod) string {
	for _, s := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		if s.Name != inject.ProxyContainer {
			continue
		}
		switch {
		case s.Ready:
			return ""
		case s.State.Waiting != nil:
			return "proxy waiting: " + s.State.Waiting.Reason
		case s.State.Terminated != nil:
			return fmt.Sprintf("proxy terminated: %s (exit %d)", s.State.Terminated.Reason, s.State.Terminated.ExitCode)
		}
		var since string
		if s.State.Running != nil {
			since = " for " + human(time.Since(s.State.Running.StartedAt.Time))
		}
		return fmt.Sprintf("proxy running%s but not ready (restarted %d times): its /ready fails; see kubectl logs -n %s %s -c %s",
			since, s.RestartCount, p.Namespace, p.Name, inject.ProxyContainer)
	}
	return "proxy not started (Pod " + string(p.Status.Phase) + ")"
}

func joined(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "\n"))
}
