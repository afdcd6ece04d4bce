#!/usr/bin/env bash
# Builds the FerretDB version pinned in this folder's go.mod into <repo>/.local/bin/ferretdb.
#
# Why not just `go install github.com/FerretDB/FerretDB/cmd/ferretdb` here?
# Go records the module holding the main package (FerretDB itself) as the binary's main
# module, and FerretDB's build/version package then panics at start-up because the
# generated build/version/version.txt is not part of the published module. The module
# cache is read-only and `go build -overlay` refuses to touch it, so we copy the pinned
# (checksum-verified) module source to a scratch directory, write version.txt there and
# build from that copy, which is also how FerretDB's own release builds run.
#
# Usage: tools/ferretdb/build.sh [output-path]   (default: <repo>/.local/bin/ferretdb)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/.local/bin/ferretdb}"

case ":$PATH:" in *:/usr/local/go/bin:*) ;; *) PATH="$PATH:/usr/local/go/bin" ;; esac
command -v go >/dev/null || { echo "build.sh: go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }

# The scratch copy must not pick up a go.work or the surrounding git repository.
export GOWORK=off GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

cd "$here"
# Downloads (if needed) and verifies the pinned module against this folder's go.sum.
read -r version src < <(go mod download -json github.com/FerretDB/FerretDB |
	sed -n 's/^[[:space:]]*"\(Version\|Dir\)": "\(.*\)",\{0,1\}$/\2/p' | paste -sd' ')
[[ "$version" == v* && -d "$src" ]] || { echo "build.sh: could not resolve FerretDB module ($version, $src)" >&2; exit 1; }

scratch="$(mktemp -d "${TMPDIR:-/tmp}/ferretdb-build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
cp -R "$src/." "$scratch/"
chmod -R u+w "$scratch"
printf '%s\n' "$version" >"$scratch/build/version/version.txt"
printf '%s\n' "chat-system-local" >"$scratch/build/version/package.txt"

mkdir -p "$(dirname "$out")"
cd "$scratch"
go build -buildvcs=false -trimpath -o "$out.tmp" ./cmd/ferretdb
mv -f "$out.tmp" "$out"
echo "built $out ($("$out" --version 2>&1 | sed -n 's/^version:[[:space:]]*//p' | head -1))"
