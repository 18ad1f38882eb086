package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/trellis-mesh/trellis/internal/kube/auth"
)

// kubeSource writes endpoints as a cluster's Services and EndpointSlices,
// in a namespace of their own, deleted at the end.
type kubeSource struct {
	client kubernetes.Interface
	ns     string
}

func newKubeSource(kubeconfig, ns string) *kubeSource {
	cfg, err := auth.UserConfig(kubeconfig, "")
	if err != nil {
		log.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400 // setup writes hundreds of objects
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatal(err)
	}
	k := &kubeSource{client: client, ns: ns}
	ctx := context.Background()
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		log.Fatal(err)
	}
	return k
}

func (k *kubeSource) close() {
	ctx := context.Background()
	if err := k.client.CoreV1().Namespaces().Delete(ctx, k.ns, metav1.DeleteOptions{}); err != nil {
		log.Printf("deleting namespace %s: %v", k.ns, err)
	}
}

func (k *kubeSource) setup(ctx context.Context, services, perService int) {
	for s := range services {
		name := fmt.Sprintf("svc-%d", s)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.ns},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080, Protocol: corev1.ProtocolTCP}}}}
		if _, err := k.client.CoreV1().Services(k.ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			log.Fatal(err)
		}
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.ns, Labels: map[string]string{
				discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "trellis-bench"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		for w := range perService {
			slice.Endpoints = append(slice.Endpoints, endpoint(s, w))
		}
		if _, err := k.client.DiscoveryV1().EndpointSlices(k.ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			log.Fatal(err)
		}
	}
}

func endpoint(s, w int) discoveryv1.Endpoint {
	host, _, _ := net.SplitHostPort(endpointAddr(s, w))
	return discoveryv1.Endpoint{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
}

// change rewrites service s's slice with edit.
func (k *kubeSource) change(ctx context.Context, s int, edit func([]discoveryv1.Endpoint) []discoveryv1.Endpoint) {
	slices := k.client.DiscoveryV1().EndpointSlices(k.ns)
	for attempt := 0; ; attempt++ {
		cur, err := slices.Get(ctx, fmt.Sprintf("svc-%d", s), metav1.GetOptions{})
		if err == nil {
			cur.Endpoints = edit(cur.Endpoints)
			if _, err = slices.Update(ctx, cur, metav1.UpdateOptions{}); err == nil {
				return
			}
		}
		if !apierrors.IsConflict(err) || attempt == 5 {
			log.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (k *kubeSource) add(ctx context.Context, s, w int) {
	k.change(ctx, s, func(eps []discoveryv1.Endpoint) []discoveryv1.Endpoint { return append(eps, endpoint(s, w)) })
}

func (k *kubeSource) remove(ctx context.Context, s, w int) {
	host, _, _ := net.SplitHostPort(endpointAddr(s, w))
	k.change(ctx, s, func(eps []discoveryv1.Endpoint) []discoveryv1.Endpoint {
		out := eps[:0]
		for _, ep := range eps {
			if ep.Addresses[0] != host {
				out = append(out, ep)
			}
		}
		return out
	})
}
