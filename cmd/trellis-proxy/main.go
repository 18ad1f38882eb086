// Command trellis-proxy is the Trellis data-plane proxy.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/trellis-mesh/trellis/internal/proxy/cli"
)

func main() {
	if err := cli.New().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-proxy:", err)
		os.Exit(1)
	}
}
