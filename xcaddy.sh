#!/usr/bin/env bash
# Builds ./caddy: Caddy v2.11.9 with lpauth and its CC emulator (ccemu), from
# this checkout. Installs xcaddy first if it is missing.
#
#   ./xcaddy.sh              # writes ./caddy
#   ./xcaddy.sh /tmp/caddy   # writes elsewhere
#   LPAUTH_NO_EMULATOR=1 ./xcaddy.sh    # production build without ccemu
#   LPAUTH_WITH_REDIS=1 ./xcaddy.sh     # add Redis storage, for cluster mode
#   LPAUTH_XCADDY_WITH="github.com/x/y@v1.2.3" ./xcaddy.sh  # extra plugins
set -euo pipefail

CADDY_VERSION=v2.11.9
XCADDY_VERSION=v0.4.5
MODULE=github.com/lpauth/caddy-lpauth

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
output=${1:-"$here/caddy"}
case "$output" in /*) ;; *) output="$PWD/$output" ;; esac

command -v go >/dev/null || { echo "xcaddy.sh: Go is required (https://go.dev/dl/)" >&2; exit 1; }
gobin=$(go env GOBIN); [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
xcaddy=$(command -v xcaddy || true)
if [ -z "$xcaddy" ] || ! "$xcaddy" version 2>/dev/null | grep -q "$XCADDY_VERSION"; then
	if [ ! -x "$gobin/xcaddy" ] || ! "$gobin/xcaddy" version 2>/dev/null | grep -q "$XCADDY_VERSION"; then
		echo "xcaddy.sh: installing xcaddy $XCADDY_VERSION" >&2
		go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
	fi
	xcaddy="$gobin/xcaddy"
fi

# "@v0.0.0=<dir>": an unpublished local module needs a version, or the module
# proxy's refusal of the unknown path stops the build. For the same reason the
# emulator comes in through a build tag of the root package rather than a
# --with of its sub-package.
with=(--with "$MODULE@v0.0.0=$here")
if [ -z "${LPAUTH_NO_EMULATOR:-}" ]; then
	export XCADDY_GO_BUILD_FLAGS="${XCADDY_GO_BUILD_FLAGS:-} -tags=ccemu"
fi
if [ -n "${LPAUTH_WITH_REDIS:-}" ]; then
	with+=(--with "github.com/pberkel/caddy-storage-redis@v1.8.1")
fi
for extra in ${LPAUTH_XCADDY_WITH:-}; do
	with+=(--with "$extra")
done

cd "$here"
# Offline first: once the module cache holds everything (any build after the
# first, CI), the build needs no network and cannot fail on it. Otherwise,
# or on any other failure, build again through the module proxy, in view.
if ! GOPROXY=off "$xcaddy" build "$CADDY_VERSION" --output "$output" "${with[@]}" >/dev/null 2>&1; then
	"$xcaddy" build "$CADDY_VERSION" --output "$output" "${with[@]}"
fi
"$output" version >/dev/null
echo "xcaddy.sh: built $output" >&2
