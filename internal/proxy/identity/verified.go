package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// maxVerified bounds a verifier's memory of chains; when full it starts
// over.
const maxVerified = 1024

// verifier is VerifyPeer for one set of anchors and one usage, remembering
// the chains it accepted: a peer's next connections present the same chain
// (a resumed session carries the certificates of the one it resumes), and
// then only the validity periods are checked again, not the signatures —
// which are a quarter of the CPU of a resumed mTLS handshake
// (BenchmarkResumedHandshake). What is remembered is keyed by the digest of
// every certificate of the chain and holds only what verification found
// (the identity, and when the verified chain is valid), so a chain that
// differs in any byte is verified in full.
type verifier struct {
	anchors *x509.CertPool
	usage   x509.ExtKeyUsage
	mu      sync.Mutex
	known   map[[sha256.Size]byte]verifiedChain
}

// verifiedChain is what verification of a chain found.
type verifiedChain struct {
	id                  meshid.ID
	notBefore, notAfter time.Time // when every certificate of the verified chain is valid
}

func newVerifier(anchors *x509.CertPool, usage x509.ExtKeyUsage) *verifier {
	return &verifier{anchors: anchors, usage: usage, known: map[[sha256.Size]byte]verifiedChain{}}
}

// verify is VerifyPeer(v.anchors, chain, v.usage, now).
func (v *verifier) verify(chain []*x509.Certificate, now time.Time) (meshid.ID, error) {
	key := chainDigest(chain)
	v.mu.Lock()
	known, ok := v.known[key]
	v.mu.Unlock()
	if ok && !now.Before(known.notBefore) && !now.After(known.notAfter) {
		return known.id, nil
	}
	id, verified, err := verifyPeer(v.anchors, chain, v.usage, now)
	if err != nil {
		return id, err
	}
	known = verifiedChain{id: id, notBefore: verified[0].NotBefore, notAfter: verified[0].NotAfter}
	for _, c := range verified[1:] {
		if c.NotBefore.After(known.notBefore) {
			known.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(known.notAfter) {
			known.notAfter = c.NotAfter
		}
	}
	v.mu.Lock()
	if len(v.known) >= maxVerified {
		clear(v.known)
	}
	v.known[key] = known
	v.mu.Unlock()
	return id, nil
}

// chainDigest identifies a chain by the bytes of all its certificates.
func chainDigest(chain []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range chain {
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
