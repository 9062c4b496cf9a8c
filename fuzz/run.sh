#!/usr/bin/env bash
# fuzz/run.sh [SECONDS [TARGET...]]: runs every cargo-fuzz target (or the TARGETs named) in
# turn for SECONDS (default 60) with one job, then prints executions, executions per second, coverage and corpus size per
# target. Exits non-zero when a target crashed, leaked, timed out or ran out of memory; the
# input is in fuzz/artifacts/<target>/ and printed in base64.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). New
# inputs are added to fuzz/corpus/<target>/ beside the committed seed-* files (git ignores
# them); `cargo test --test fuzz_corpus` replays them on stable.
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS [TARGET...]]" >&2
    exit 2
    ;;
esac
cd "$(dirname "$0")"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz on nightly is needed: rustup toolchain install nightly &&" \
        "cargo install cargo-fuzz --locked" >&2
    exit 2
fi

# One build for all targets, so the per-target time is spent fuzzing.
cargo +nightly fuzz build
if [ "$#" -gt 1 ]; then
    targets=("${@:2}")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# Prints the value of one `stat::NAME:` line of libFuzzer's final statistics.
stat() {
    sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

failed=()
printf '%-15s %12s %10s %8s %8s %s\n' target executions exec/s cov corpus result
for target in "${targets[@]}"; do
    log="$logs/$target.log"
    # -timeout: an input taking seconds is a finding (targets take microseconds);
    # -print_final_stats: the executions reported below.
    if cargo +nightly fuzz run "$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed+=("$target")
    fi
    done_line="$(grep -aE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")"
    corpus="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")"
    printf '%-15s %12s %10s %8s %8s %s\n' "$target" \
        "$(stat number_of_executed_units "$log")" "$(stat average_exec_per_sec "$log")" \
        "${cov:--}" "${corpus:--}" "$result"
    if [ "$result" = FAILED ]; then
        grep -aE 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -n 20 >&2 || tail -n 40 "$log" >&2
        sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | while read -r artifact; do
            if [ -f "$artifact" ]; then echo "$artifact: $(base64 -w0 "$artifact")" >&2; fi
        done
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
