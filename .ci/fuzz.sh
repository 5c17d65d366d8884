#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a short while,
# starting from the seeds in fuzz/seeds/. Usage: .ci/fuzz.sh [SECONDS_PER_TARGET]
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. CI builds without a sanitizer (safe Rust, a faster
# build); for long runs drop `--sanitizer none` to get AddressSanitizer too.
# A crash, a leak, a time-out or running out of memory fails the run and
# leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build --sanitizer none
for target in token identifiers request app; do
    mkdir -p "corpus/$target"
    log=$(mktemp)
    if ! cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $target failed; the input is in fuzz/artifacts/$target" >&2
        exit 1
    fi
    echo "fuzz $target: $(grep -E '^Done' "$log")"
    rm -f "$log"
done
