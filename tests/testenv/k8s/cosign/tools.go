//go:build tools

// Package tools pins cosign, which the Helm tests sign OCI charts with (reckon verifies the
// signatures itself), built by scripts/build-k8s-go.sh into the control plane's bin directory.
package tools

import _ "github.com/sigstore/cosign/v3/cmd/cosign"
