// Package injector runs the proxy injector: the mutating admission webhook
// (inject.Webhook) served over TLS to the API server, with the namespace
// annotations it decides by read from the Kubernetes API, and /ready and
// /live on an admin port. It is `trellis-control injector`.
package injector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/kube/inject"
)

// Options configure the injector.
type Options struct {
	Addr, AdminAddr     string
	TLSCert, TLSKey     string // the webhook's serving certificate (PEM files)
	TrustAnchorsFile    string
	ControlNamespace    string
	Kubeconfig          string
	ShutdownGracePeriod time.Duration
	Inject              inject.Config
	cpu, memory         string
}

// Flags binds every option to fs.
func (o *Options) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Addr, "addr", ":8443", "address of the webhook (HTTPS, path /mutate)")
	fs.StringVar(&o.AdminAddr, "admin-addr", ":9995", "address serving /ready and /live")
	fs.StringVar(&o.TLSCert, "tls-cert-file", "", "PEM certificate the webhook serves (for trellis-injector.<namespace>.svc)")
	fs.StringVar(&o.TLSKey, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&o.TrustAnchorsFile, "trust-anchors", "", "PEM file of the mesh's trust anchors, given to every injected proxy")
	fs.StringVar(&o.ControlNamespace, "control-plane-namespace", "trellis", "namespace of the Trellis control plane")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig to reach the API server with (default: in-cluster)")
	fs.DurationVar(&o.ShutdownGracePeriod, "shutdown-grace-period", 10*time.Second, "how long SIGTERM waits for in-flight reviews")
	fs.StringVar(&o.Inject.ProxyImage, "proxy-image", "localhost/trellis-proxy:"+buildinfo.String(), "image of the injected proxy and its init container")
	fs.StringVar((*string)(&o.Inject.ImagePullPolicy), "proxy-image-pull-policy", string(corev1.PullIfNotPresent), "pull policy of the proxy image")
	fs.StringVar(&o.Inject.TrustDomain, "trust-domain", "cluster.local", "the mesh's trust domain")
	fs.StringVar(&o.Inject.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	fs.StringVar(&o.Inject.IdentityAddr, "identity-addr", "", "identity service address given to proxies (default trellis-identity.<control-plane-namespace>.svc.<cluster-domain>:8080)")
	fs.StringVar(&o.Inject.DestinationAddr, "destination-addr", "", "destination service address given to proxies (default trellis-destination.<control-plane-namespace>.svc.<cluster-domain>:8086)")
	fs.StringVar(&o.Inject.LogLevel, "proxy-log-level", "info", "the proxies' log level (a Pod's config.trellis.dev/proxy-log-level wins)")
	fs.StringVar(&o.cpu, "proxy-cpu-request", "100m", "the proxy container's CPU request")
	fs.StringVar(&o.memory, "proxy-memory-request", "20Mi", "the proxy container's memory request")
}

// Injector is a bound injector, ready to Run.
type Injector struct {
	o        Options
	log      *slog.Logger
	srv      *http.Server
	admin    *http.Server
	lis, adm net.Listener
}

// New checks the options, reads the trust anchors and the serving
// certificate, and binds both listeners; errors name the flag at fault.
func New(o Options, client kubernetes.Interface, log *slog.Logger) (*Injector, error) {
	if o.TLSCert == "" || o.TLSKey == "" {
		return nil, errors.New("--tls-cert-file and --tls-key-file are required: the API server only calls webhooks over HTTPS")
	}
	cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file, --tls-key-file: %w", err)
	}
	if o.TrustAnchorsFile == "" {
		return nil, errors.New("--trust-anchors is required")
	}
	pem, err := os.ReadFile(o.TrustAnchorsFile)
	if err != nil {
		return nil, fmt.Errorf("--trust-anchors: %w", err)
	}
	o.Inject.TrustAnchorsPEM = string(pem)
	o.Inject.Version = buildinfo.String()
	if o.Inject.IdentityAddr == "" {
		o.Inject.IdentityAddr = "trellis-identity." + o.ControlNamespace + ".svc." + o.Inject.ClusterDomain + ":8080"
	}
	if o.Inject.DestinationAddr == "" {
		o.Inject.DestinationAddr = "trellis-destination." + o.ControlNamespace + ".svc." + o.Inject.ClusterDomain + ":8086"
	}
	for flag, q := range map[string]string{"proxy-cpu-request": o.cpu, "proxy-memory-request": o.memory} {
		if _, err := resource.ParseQuantity(q); err != nil {
			return nil, fmt.Errorf("--%s %q: %w", flag, q, err)
		}
	}
	o.Inject.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(o.cpu), corev1.ResourceMemory: resource.MustParse(o.memory)}
	if err := o.Inject.Validate(); err != nil {
		return nil, err
	}
	wh := &inject.Webhook{Config: o.Inject, Log: log, NamespaceAnnotations: func(ctx context.Context, name string) (map[string]string, error) {
		ns, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return ns.Annotations, nil
	}}
	mux := http.NewServeMux()
	mux.Handle("/mutate", wh)
	in := &Injector{o: o, log: log,
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}},
	}
	adminMux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
	adminMux.HandleFunc("GET /ready", ok)
	adminMux.HandleFunc("GET /live", ok)
	in.admin = &http.Server{Handler: adminMux, ReadHeaderTimeout: 10 * time.Second}
	if in.lis, err = net.Listen("tcp", o.Addr); err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	if in.adm, err = net.Listen("tcp", o.AdminAddr); err != nil {
		in.lis.Close()
		return nil, fmt.Errorf("--admin-addr: %w", err)
	}
	return in, nil
}

// Addr is where the webhook listens.
func (in *Injector) Addr() net.Addr { return in.lis.Addr() }

// Run serves until ctx ends, then drains in-flight reviews.
func (in *Injector) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- in.srv.ServeTLS(in.lis, "", "") }()
	go func() { errc <- in.admin.Serve(in.adm) }()
	in.log.Info("injector serving", "addr", in.lis.Addr().String(), "proxy_image", in.o.Inject.ProxyImage)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), in.o.ShutdownGracePeriod)
	defer cancel()
	in.admin.Shutdown(sctx)
	return in.srv.Shutdown(sctx)
}
