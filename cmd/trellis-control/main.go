// Command trellis-control is the Trellis control plane: each component
// (today: identity) is a subcommand.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/trellis-mesh/trellis/internal/control/cli"
)

func main() {
	if err := cli.New().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-control:", err)
		os.Exit(1)
	}
}
