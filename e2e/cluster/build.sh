#!/usr/bin/env bash
# Builds the pinned tools the chart tests and the e2e suite run, once, into .cache/bin/.
#
#   e2e/cluster/build.sh helm     just helm (the chart tests need it: `make test`)
#   e2e/cluster/build.sh all      helm, kwok (and its stages, .cache/kwok/stages.yaml),
#                                 kube-apiserver, kube-controller-manager, kube-scheduler and
#                                 kubectl (the local control plane), the node's binaries and
#                                 the Kueue ones
#   e2e/cluster/build.sh node     kubelet and kube-proxy: a real node beside the simulated ones,
#                                 running the chart's pods (e2e/test_pods.py; containerd, runc
#                                 and the CNI plugins are Debian's)
#   e2e/cluster/build.sh kind     helm, kind and kubectl (the kind path; needs a Docker engine
#                                 to run, not to build)
#   e2e/cluster/build.sh kueue    Kueue's and JobSet's controller managers (e2e/test_kueue.py;
#                                 `all` includes them)
#
# Versions live in the go.mod files beside this script (one module per tool, each with its
# go.sum, so a build is reproducible and checked against the sums). A binary is rebuilt only
# when its go.mod, go.sum or link flags change: the stamp next to it records their hash. Go's own build
# and module caches are the user's usual ones, so a second clone on the same machine
# reuses the compiled packages.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${HEATSHIFT_TOOLS_BIN:-$root/.cache/bin}"
mkdir -p "$bin"

# Version-stamped the way the upstream release builds are: helm compares a chart's kubeVersion
# with the server's, and the server reports what these say (not v0.0.0-master).
# module_version DIR MODULE: the version of MODULE that DIR's go.mod selects.
module_version() {
	(cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}
k8s_version="$(module_version kubernetes k8s.io/kubernetes)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
helm_version="$(module_version helm helm.sh/helm/v3)"

k8s_ldflags="-s -w
 -X k8s.io/component-base/version.gitVersion=$k8s_version
 -X k8s.io/component-base/version.gitMajor=1
 -X k8s.io/component-base/version.gitMinor=$k8s_minor
 -X k8s.io/component-base/version.gitTreeState=clean
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version
 -X k8s.io/client-go/pkg/version.gitMajor=1
 -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
# helm's default Kubernetes version for `helm template` follows its client-go, as upstream's
# Makefile sets it; unset it would claim v1.20.
helm_client_go="$(module_version helm k8s.io/client-go)"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(echo "$helm_client_go" | cut -d. -f2)"
kwok_ldflags="-s -w"
# Kueue stamps its version as its Makefile does: its visibility API server serves only the API
# versions its own version says exist (an unstamped v0.0.0 serves none, so discovery 404s).
kueue_version="$(module_version kueue sigs.k8s.io/kueue)"
kueue_ldflags="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$kueue_version"

# build MODULE_DIR LDFLAGS NAME=PACKAGE...
build() {
	local dir="$1" ldflags="$2"
	shift 2
	local stamp
	stamp="$( (cat "$here/$dir/go.mod" "$here/$dir/go.sum" && echo "$ldflags") | sha256sum | cut -c1-16)"
	local missing=()
	local spec
	for spec in "$@"; do
		local name="${spec%%=*}"
		if [[ ! -x "$bin/$name" || "$(cat "$bin/$name.stamp" 2>/dev/null)" != "$stamp" ]]; then
			missing+=("$spec")
		fi
	done
	if [[ ${#missing[@]} -eq 0 ]]; then
		return
	fi
	for spec in "${missing[@]}"; do
		local name="${spec%%=*}" pkg="${spec#*=}"
		local start=$SECONDS
		echo "build.sh: building $name ($pkg)" >&2
		# CGO off: static binaries, and no C toolchain on the path of a 90-minute CI run.
		(cd "$here/$dir" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
			nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
		mv "$bin/$name.tmp" "$bin/$name"
		echo "$stamp" >"$bin/$name.stamp"
		echo "build.sh: built $name in $((SECONDS - start))s" >&2
	done
}

build_helm() {
	build helm "$helm_ldflags" helm=helm.sh/helm/v3/cmd/helm
}

# kwok needs Stage objects saying how simulated nodes and pods change state. Use the ones its
# release ships: nodes ready at once with heartbeats, pods running at once, and Job pods
# completing after the delay their pod-complete.stage.kwok.x-k8s.io/delay annotation gives (the
# e2e Jobs set it, so their load stays on a site for a while, as real work would).
kwok_stages() {
	local dir out="$bin/../kwok/stages.yaml"
	dir="$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
	mkdir -p "$(dirname "$out")"
	{
		for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
			pod/fast/pod-ready.yaml pod/general/pod-complete.yaml pod/fast/pod-delete.yaml; do
			echo "---"
			cat "$dir/$f"
		done
	} >"$out.tmp"
	mv "$out.tmp" "$out"
}

build_cluster() {
	build kwok "$kwok_ldflags" kwok=sigs.k8s.io/kwok/cmd/kwok
	kwok_stages
	build kubernetes "$k8s_ldflags" \
		kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
		kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
		kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
		kubectl=k8s.io/kubernetes/cmd/kubectl
}

build_node() {
	build kubernetes "$k8s_ldflags" \
		kubelet=k8s.io/kubernetes/cmd/kubelet \
		kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
}

# Kueue and JobSet each in their own module: they pin different controller-runtimes.
build_kueue() {
	build kueue "$kueue_ldflags" kueue=sigs.k8s.io/kueue/cmd/kueue
	build jobset "-s -w" jobset=sigs.k8s.io/jobset
}

build_kind() {
	build kind "-s -w" kind=sigs.k8s.io/kind
	build kubernetes "$k8s_ldflags" kubectl=k8s.io/kubernetes/cmd/kubectl
}

case "${1:-all}" in
helm) build_helm ;;
all)
	build_helm
	build_cluster
	build_node
	build_kueue
	;;
node) build_node ;;
kueue) build_kueue ;;
kind)
	build_helm
	build_kind
	;;
*)
	echo "usage: $0 [helm|all|node|kind|kueue]" >&2
	exit 2
	;;
esac
