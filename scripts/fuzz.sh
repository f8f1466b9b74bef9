#!/bin/sh
# Runs every cargo-fuzz target of fuzz/ for N seconds each (first argument, default 60).
#
# cargo-fuzz needs nightly compiler flags (-Zsanitizer, coverage instrumentation); this
# project's toolchain is stable, so RUSTC_BOOTSTRAP=1 unlocks them. cargo-fuzz itself is
# installed on first use into target/tools (project-local, nothing global).
#
# A crash stops the script with libFuzzer's report; the input is kept under
# fuzz/artifacts/<target>/ (reproduce: scripts/fuzz.sh with `cargo fuzz run <target> <file>`).
set -eu
cd "$(dirname "$0")/.."
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
tools="$PWD/target/tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"
for target in $(cargo fuzz list); do
    echo "== fuzzing $target for ${secs}s" >&2
    mkdir -p "fuzz/corpus/$target"
    cargo fuzz run "$target" "fuzz/corpus/$target" -- -dict=fuzz/zmtp.dict \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048
done
echo "== fuzzing done: no crash in $(cargo fuzz list | wc -l) targets x ${secs}s" >&2
