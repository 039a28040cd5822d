#!/usr/bin/env bash
# Installs what rtbh's tests need on Debian/Ubuntu: BIRD 2 and FRR (real
# routers for the end-to-end tests), pmacct (a real sFlow exporter), protoc
# with the protobuf well-known types (regenerating the gRPC code),
# Chromium (the web console's browser tests; it must start headless) and
# PostgreSQL (a throwaway cluster for the store contract and HA tests).
#
# Idempotent: installs only when a check of the installed result fails.
# The checks use what was installed, not the presence of a binary: protoc
# must compile a file that imports google/protobuf/timestamp.proto and
# duration.proto (Debian ships those headers in libprotobuf-dev, which
# protoc only recommends), and each router binary must print its version.
# Needs root (or sudo) only when something is missing. Exits non-zero,
# loudly, when it cannot install them.
set -euo pipefail

packages=(bird2 frr pmacct protobuf-compiler libprotobuf-dev postgresql)
packages+=(chromium fonts-dejavu-core) # web console browser tests (readable screenshots)
packages+=(iproute2 util-linux) # ip netns and nsenter: the HA partition test runs PostgreSQL in a namespace

# PostgreSQL's server binaries (Debian: postgresql-VERSION); the tests run
# initdb and postgres from the newest of them (store/postgres/pgtest.BinDir).
pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# check NAME: runs the check for one dependency; 0 = usable.
check() {
	case "$1" in
	bird) PATH="$PATH:/usr/sbin" bird --version >/dev/null 2>&1 ;;
	bgpd) /usr/lib/frr/bgpd --version >/dev/null 2>&1 ;;
	vtysh) [[ -x /usr/bin/vtysh ]] && vtysh -h >/dev/null 2>&1 ;;
	pmacctd) PATH="$PATH:/usr/sbin" pmacctd -V >/dev/null 2>&1 ;;
	chromium)
		# It must really start headless and render a page, not just exist.
		local dir out
		dir=$(mktemp -d)
		out=$(timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
			--disable-background-networking --disable-component-update --disable-sync --user-data-dir="$dir" \
			--dump-dom about:blank 2>"$dir/log")
		if [[ "$out" != *"<body>"* ]]; then
			sed 's/^/  chromium: /' "$dir/log" | tail -20 >&2
			rm -rf "$dir"
			return 1
		fi
		rm -rf "$dir"
		;;
	initdb)
		# A cluster must really initialise, as the tests do it: as the
		# postgres user when root (postgres refuses to run as root).
		local pgdir pgrc pgbin
		pgbin=$(pgbin)
		[[ -n "$pgbin" && -x "$pgbin/initdb" ]] || return 1
		pgdir=$(mktemp -d)
		if ((EUID == 0)); then
			chown postgres "$pgdir" 2>/dev/null || { rm -rf "$pgdir"; return 1; }
			runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres --no-sync >"$pgdir.log" 2>&1
		else
			"$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres --no-sync >"$pgdir.log" 2>&1
		fi
		pgrc=$?
		((pgrc == 0)) || sed 's/^/  initdb: /' "$pgdir.log" >&2
		rm -rf "$pgdir" "$pgdir.log"
		return $pgrc
		;;
	netns)
		# iproute2 and util-linux must work (the partition test skips
		# where the machine does not allow network namespaces).
		ip -V >/dev/null 2>&1 && nsenter --version >/dev/null 2>&1
		;;
	protoc-wkt)
		local dir rc
		dir=$(mktemp -d)
		cat >"$dir/wkt.proto" <<'PROTO'
syntax = "proto3";
package rtbh.installcheck;
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
message M { google.protobuf.Timestamp at = 1; google.protobuf.Duration ttl = 2; }
PROTO
		protoc -I "$dir" --descriptor_set_out="$dir/out.pb" "$dir/wkt.proto" >"$dir/log" 2>&1
		rc=$?
		((rc == 0)) || sed 's/^/  protoc: /' "$dir/log" >&2
		rm -rf "$dir"
		return $rc
		;;
	esac
}

failing() {
	local out=()
	for c in bird bgpd vtysh pmacctd protoc-wkt chromium initdb netns; do
		check "$c" || out+=("$c")
	done
	echo "${out[@]}"
}

missing=$(failing)
if [[ -z "$missing" ]]; then
	echo "install-test-deps: bird, frr, pmacct, protoc (with the well-known types), headless chromium, PostgreSQL's initdb, ip and nsenter work"
	exit 0
fi
echo "install-test-deps: not working: $missing; installing ${packages[*]}"

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

still=$(failing)
if [[ -n "$still" ]]; then
	echo "install-test-deps: ERROR: still not working after install: $still" >&2
	exit 1
fi
echo "install-test-deps: done; every check passes"
