// Command gastown runs the town reconciler fleet: the HTTP API and River workers
// (serve), migrations (migrate), and a self-contained demo (dev).
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "gastown:", err)
		os.Exit(1)
	}
}
