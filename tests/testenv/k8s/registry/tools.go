//go:build tools

// Package tools pins the OCI registry the Helm tests push charts to and reckon pulls them from:
// the CNCF distribution registry (the reference implementation of the OCI distribution spec),
// built by scripts/build-k8s-go.sh into the control plane's bin directory.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
