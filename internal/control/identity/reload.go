package identity

import (
	"bytes"
	"context"
	"os"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// watchFiles checks the supplied hierarchy's files every interval and, when
// they change, loads them and issues from the new issuer: cert-manager (or
// an operator) rotates the issuer by rewriting its Secret, which the
// kubelet swaps into the mounted volume in one step. Files that change but
// do not load — a new issuer not signed by the trust anchors, a key that is
// not its own, a half-written file — leave the current issuer serving, and
// say why once per change.
func (s *Server) watchFiles(ctx context.Context, interval time.Duration) {
	files := []string{s.opts.TrustAnchorPEM, s.opts.IssuerCertPEM, s.opts.IssuerKeyPEM}
	last, _ := readAll(files)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		content, err := readAll(files)
		if err != nil || bytes.Equal(content, last) {
			continue
		}
		last = content
		ca, err := pki.LoadFiles(files[0], files[1], files[2], time.Now())
		if err != nil {
			s.log.Error("the issuer's files changed but do not load; still issuing from the previous issuer", "error", err)
			continue
		}
		prev := s.svc.CA()
		s.svc.SetCA(ca)
		s.log.Info("loaded a rotated issuer", "issuer", ca.Issuer().Subject.String(), "expires", ca.NotAfter().UTC().Format(time.RFC3339),
			"previous_expires", prev.NotAfter().UTC().Format(time.RFC3339))
		s.svc.CheckExpiry()
	}
}

// readAll is the files' contents, one after another.
func readAll(files []string) ([]byte, error) {
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		all = append(append(all, b...), 0)
	}
	return all, nil
}
