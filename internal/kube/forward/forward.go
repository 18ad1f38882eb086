// Package forward reaches a port of a control-plane Pod from the CLI, as
// kubectl port-forward does: through the API server (which authorizes
// pods/portforward), to a local port on the loopback.
package forward

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// Forward is a running port-forward.
type Forward struct {
	// Addr is the local end: 127.0.0.1:PORT.
	Addr string
	// Pod is the forwarded Pod, namespace/name.
	Pod  string
	stop chan struct{}
}

// Close stops the forward.
func (f *Forward) Close() { close(f.stop) }

// Start forwards a local port to port of a Running, Ready Pod of namespace
// matching selector: one not named in avoid (namespace/name) if there is
// such a Pod.
func Start(ctx context.Context, cfg *rest.Config, namespace, selector string, port int, avoid ...string) (*Forward, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	pods, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("finding the control plane (namespace %s, %s): %w", namespace, selector, err)
	}
	var pod *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if ready(p) && (pod == nil || slices.Contains(avoid, pod.Namespace+"/"+pod.Name)) {
			pod = p
		}
	}
	if pod == nil {
		return nil, fmt.Errorf("no ready Pod in namespace %s matches %s: is Trellis installed (trellis check)?", namespace, selector)
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL().String())
	if err != nil {
		return nil, err
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	f := &Forward{Pod: pod.Namespace + "/" + pod.Name, stop: make(chan struct{})}
	readyc := make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, f.stop, readyc, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-readyc:
	case err := <-errc:
		return nil, fmt.Errorf("port-forward to %s: %w", f.Pod, err)
	case <-ctx.Done():
		close(f.stop)
		return nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		close(f.stop)
		return nil, fmt.Errorf("port-forward to %s: no local port (%v)", f.Pod, err)
	}
	f.Addr = "127.0.0.1:" + strconv.Itoa(int(ports[0].Local))
	return f, nil
}

func ready(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
