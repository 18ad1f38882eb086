package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	identityv1 "github.com/trellis-mesh/trellis/api/identity/v1"
	"github.com/trellis-mesh/trellis/internal/control/localapi"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/metricstest"
	proxyid "github.com/trellis-mesh/trellis/internal/proxy/identity"
)

// A workload cannot take another service's traffic. Holding a mesh
// certificate of its own (as a compromised proxy would), from inside its
// instance's namespace it tries to join the victim's service, to register
// itself at the victim's address, and to take over the victim's
// instance: the registry refuses each, counts it by reason, and the
// victim's service keeps exactly its own instance. Without a certificate
// it cannot even ask discovery where the victim is.
func TestForeignIdentityCannotServeAService(t *testing.T) {
	requireTransparent(t)
	fortio := fortioBin(t)
	dataDir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dataDir), 0o711); err != nil {
		t.Fatal(err)
	}
	controlPort, admin := freePort(t), loopback(freePort(t))
	up := startTrellis(t, -1, nil, "--data-dir", dataDir, "up", "--network", "bridge", "--control-port", strconv.Itoa(controlPort), "--admin-addr", admin)
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	for _, name := range []string{"victim", "attacker"} {
		r := startTrellis(t, -1, nil, "--data-dir", dataDir, "run", "--name", name, "--port", "8080",
			"--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled", "-redirect-port", "disabled",
			"-tcp-port", "disabled", "-udp-port", "disabled")
		r.waitOutput(t, regexp.MustCompile(name+`-0: started`), 20*time.Second)
	}
	var victim, attacker workload
	for deadline := time.Now().Add(20 * time.Second); victim.Spec.Address == "" || attacker.Spec.Address == ""; time.Sleep(50 * time.Millisecond) {
		wls := workloads(t, dataDir)
		victim, attacker = wls["victim-0"], wls["attacker-0"]
		if time.Now().After(deadline) {
			t.Fatalf("the instances never registered: %v", wls)
		}
	}

	// The attacker's credentials: a certificate of its own identity, got
	// from inside its namespace as its proxy got one.
	control := "10.239.0.1:" + strconv.Itoa(controlPort)
	anchorsPEM, err := os.ReadFile(filepath.Join(dataDir, "trust-anchor.pem"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := x509.NewCertPool()
	anchors.AppendCertsFromPEM(anchorsPEM)
	attackerID := meshid.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "attacker"}
	dialer := &NetNSDialer{NetNS: "trellis-default-attacker-0"}
	dial := func(getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *grpc.ClientConn {
		conn, err := grpc.NewClient("passthrough:///"+control,
			grpc.WithTransportCredentials(credentials.NewTLS(proxyid.ClientConfig(anchors, meshid.IdentityServiceID("cluster.local"), getCert))),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	token, err := localapi.NewClient(filepath.Join(dataDir, "api.sock")).JoinToken(ctx, attackerID.String(), time.Minute, true)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{attackerID.URL()}}, key)
	resp, err := identityv1.NewIdentityClient(dial(nil)).Certify(ctx, &identityv1.CertifyRequest{Identity: attackerID.String(), Token: []byte(token), CertificateSigningRequest: csr})
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: append([][]byte{resp.LeafCertificate}, resp.IntermediateCertificates...), PrivateKey: key}
	registry := destinationv1.NewRegistryClient(dial(func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }))

	register := func(name, service, address string) error {
		_, err := registry.Register(ctx, &destinationv1.RegisterRequest{Name: name, Service: service, Address: address,
			Ports: []*destinationv1.Port{{Port: 8080, TargetPort: 8080}}, MeshPort: 4143, AdminPort: 4191})
		return err
	}
	for _, attack := range []struct {
		name, workload, service, address string
	}{
		{"joining the victim's service", "attacker-1", "victim", attacker.Spec.Address},
		{"registering at the victim's address", "attacker-1", "attacker", victim.Spec.Address},
		{"taking over the victim's instance", "victim-0", "victim", attacker.Spec.Address},
	} {
		err := register(attack.workload, attack.service, attack.address)
		t.Logf("%s: %v", attack.name, err)
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v; want PermissionDenied", attack.name, err)
		}
	}
	// Without a certificate of the mesh, the control plane tells nothing:
	// not even where the victim's instances are.
	stream, err := destinationv1.NewDestinationClient(dial(nil)).Get(ctx, &destinationv1.GetDestination{Authority: "victim.default.svc.cluster.local:8080"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("discovery without a certificate: %v; want Unauthenticated", err)
	}

	wls := workloads(t, dataDir)
	if w := wls["victim-0"]; w.Spec.Address != victim.Spec.Address || w.Spec.Service != "victim" || len(wls) != 2 {
		t.Errorf("after the attacks the registry holds %v", wls)
	}
	m := metricstest.Scrape(t, "http://"+admin+"/metrics")
	for _, reason := range []string{"service", "address", "owner"} {
		if n := m.Sum("registry_register_refused_total", map[string]string{"reason": reason}); n < 1 {
			t.Errorf("registry_register_refused_total{reason=%q} = %v", reason, n)
		}
	}
}
