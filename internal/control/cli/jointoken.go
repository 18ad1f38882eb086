package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/control/identity"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

func joinTokenCmd() *cobra.Command {
	var dataDir, keyFile, id string
	var ttl time.Duration
	var once bool
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Print a join token that lets one proxy obtain the certificate of one identity",
		Long: `join-token signs a token, with the identity service's join-token key, that
entitles its bearer to certificates for exactly one SPIFFE ID until it
expires. Give it to the proxy of that workload (--identity-token-file).
Anyone holding the token can obtain that identity: treat it as a secret.`,
		Example: `  trellis-control join-token --data-dir /var/lib/trellis --identity spiffe://cluster.local/ns/shop/sa/web > web.token`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return errors.New("--identity is required")
			}
			parsed, err := meshid.Parse(id)
			if err != nil {
				return fmt.Errorf("--identity %q: %w", id, err)
			}
			if ttl <= 0 {
				return fmt.Errorf("--ttl %v: must be positive", ttl)
			}
			if keyFile == "" {
				if dataDir == "" {
					return errors.New("--data-dir or --join-token-key-file is required")
				}
				keyFile = filepath.Join(dataDir, identity.JoinTokenKeyFile)
			}
			key, _, err := identity.LoadOrCreateJoinTokenKey(keyFile)
			if err != nil {
				return err
			}
			token, err := identity.IssueJoinToken(key, parsed, ttl, once, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the identity service's data directory (holds "+identity.JoinTokenKeyFile+")")
	cmd.Flags().StringVar(&keyFile, "join-token-key-file", "", "the join-token signing key, instead of --data-dir's")
	cmd.Flags().StringVar(&id, "identity", "", "the SPIFFE ID the token entitles to, e.g. spiffe://cluster.local/ns/shop/sa/web")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token may be used to obtain certificates (at most 720h)")
	cmd.Flags().BoolVar(&once, "once", false, "single-use: the token gets one certificate, which the proxy then renews with itself (a proxy restarted later needs a new token)")
	return cmd
}
