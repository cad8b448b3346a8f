//go:build tools

// Pins Kueue's controller manager as a dependency of this module, so build.sh builds it at the
// version go.mod selects.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
