#!/usr/bin/env bash
# Bounded fuzzing of every target in fuzz/ (see fuzz/README.md):
#   scripts/fuzz.sh [seconds per target, default 60]
# Installs the pinned cargo-fuzz if it is missing, builds the targets once, runs each for the
# given time starting from the committed seed corpus, and exits non-zero if any target crashed
# (the crashing input is left in fuzz/artifacts/<target>/). New inputs the fuzzer finds go to
# fuzz/target/corpus/<target>/, so the committed corpus only changes when someone minimizes
# into it on purpose. Needs no input (CI runs it with CI=true).
#
# cargo fuzz passes nightly-only flags (-Z sanitizer, coverage passes) to rustc; the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1, which is set for these builds only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

readonly cargo_fuzz_version="0.13.2"
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
	echo "usage: scripts/fuzz.sh [seconds per target]" >&2
	exit 2
fi

# Longest input per target: a WebSocket text frame is at most 16 KiB (docs/protocol.md);
# tokens and token scenarios stay well under 4 KiB.
declare -A max_len=([protocol]=16384 [token]=4096)

if [[ "$(cargo fuzz --version 2>/dev/null || true)" != *" $cargo_fuzz_version"* ]]; then
	echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
	cargo install --locked "cargo-fuzz@$cargo_fuzz_version" </dev/null
fi

export RUSTC_BOOTSTRAP=1
cd "$root/fuzz"

mapfile -t targets < <(cargo fuzz list)
if [[ ${#targets[@]} -eq 0 ]]; then
	echo "fuzz: no targets found" >&2
	exit 1
fi

started=$SECONDS
cargo fuzz build </dev/null
echo "fuzz: built ${targets[*]} in $((SECONDS - started)) s"

passed=0
failed=0
for target in "${targets[@]}"; do
	work="target/corpus/$target"
	mkdir -p "$work" "corpus/$target" "artifacts/$target"
	echo "fuzz: running $target for $seconds s"
	# The first corpus directory receives new inputs; the committed seeds are only read.
	if cargo fuzz run "$target" "$work" "corpus/$target" -- \
		-max_total_time="$seconds" \
		-max_len="${max_len[$target]:-4096}" \
		-timeout=10 \
		-rss_limit_mb=2048 \
		-print_final_stats=1 </dev/null; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "fuzz: $target FAILED; reproduce with:" >&2
		for artifact in "artifacts/$target"/*; do
			[[ -e "$artifact" ]] && echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run $target fuzz/$artifact" >&2
		done
	fi
done

echo "fuzz: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
