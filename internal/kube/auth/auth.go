// Package auth connects Trellis to the Kubernetes API: a client from the
// Pod's in-cluster configuration or a kubeconfig (the control plane), the
// CLI's configuration from kubeconfig files and a context, and the
// TokenReview the identity service checks ServiceAccount tokens with.
package auth

import (
	"context"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/internal/control/identity"
)

// Client returns a Kubernetes client: from kubeconfig if it is set, else
// the in-cluster configuration (a Pod's ServiceAccount).
func Client(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := Config(kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// Config is the control plane's client configuration: from kubeconfig if
// it is set, else the in-cluster one.
func Config(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "trellis-control"
	return cfg, nil
}

// UserConfig is the CLI's client configuration, loaded as kubectl loads
// it: kubeconfig if set, else $KUBECONFIG, else ~/.kube/config; context
// if set, else the current one.
func UserConfig(kubeconfig, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
}

// TokenReviewer asks the API server about ServiceAccount tokens
// (authentication.k8s.io/v1 TokenReview; the caller needs RBAC to create
// tokenreviews).
type TokenReviewer struct {
	Client kubernetes.Interface
}

// Review implements identity.TokenReviewer.
func (r TokenReviewer) Review(ctx context.Context, token string, audiences []string) (identity.TokenReview, error) {
	tr, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return identity.TokenReview{}, err
	}
	return identity.TokenReview{Authenticated: tr.Status.Authenticated, Username: tr.Status.User.Username,
		Audiences: tr.Status.Audiences, Error: tr.Status.Error}, nil
}
