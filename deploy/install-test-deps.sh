#!/usr/bin/env bash
# Installs what rtbh's tests need on Debian/Ubuntu: BIRD 2 and FRR (real
# routers for the end-to-end tests), pmacct (a real sFlow exporter) and
# protoc (regenerating the gRPC code).
#
# Idempotent: does nothing when every tool is already there. Needs root (or
# sudo) only when something is missing. Exits non-zero, loudly, when it cannot
# install them.
set -euo pipefail

packages=(bird2 frr pmacct protobuf-compiler)

have() {
	# bird and pmacctd live in /usr/sbin, which is not always on PATH.
	command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]] || [[ -x "$1" ]]
}

missing=()
for tool in bird /usr/lib/frr/bgpd pmacctd protoc; do
	have "$tool" || missing+=("$tool")
done
if ((${#missing[@]} == 0)); then
	echo "install-test-deps: bird, frr, pmacct and protoc are already installed"
	exit 0
fi
echo "install-test-deps: missing ${missing[*]}; installing ${packages[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-test-deps: ERROR: apt-get not found; install ${packages[*]} by hand" >&2
	exit 1
fi

sudo=()
if ((EUID != 0)); then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "install-test-deps: ERROR: not root and no sudo; run as root" >&2
		exit 1
	fi
	sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${packages[@]}"

still=()
for tool in bird /usr/lib/frr/bgpd pmacctd protoc; do
	have "$tool" || still+=("$tool")
done
if ((${#still[@]} > 0)); then
	echo "install-test-deps: ERROR: still missing after install: ${still[*]}" >&2
	exit 1
fi
echo "install-test-deps: done"
