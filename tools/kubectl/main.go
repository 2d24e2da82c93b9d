// Command kubectl is kubectl built from k8s.io/kubectl at the Kubernetes
// release that go.mod names, for the integration tests of leasekeeper's
// Kubernetes Lease API on machines without a kubectl package
// (`make tools` builds it into bin/kubectl).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
}
