#!/usr/bin/env bash
# Short fuzzing run of every cargo-fuzz target, for CI.
#
#   fuzz/smoke.sh [TARGET...]        (default: every target `cargo fuzz list` shows)
#
# Environment:
#   FUZZ_SECONDS=20          seconds per target
#   FUZZ_TOOLCHAIN=nightly   toolchain cargo-fuzz builds with (it needs nightly)
#   FEDBROKER_SKIP_FUZZ=1    exit 0 (after saying why) when nightly or cargo-fuzz is
#                            missing and cannot be installed; without it that is an error
#   CARGO_TARGET_DIR         honoured as usual (default fuzz/target)
#
# Exit status: 0 when every target ran clean (or was skipped as above); 1 when a
# target crashed, timed out, leaked or failed to build; 2 when the tools are
# missing and FEDBROKER_SKIP_FUZZ is not 1.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${FUZZ_SECONDS:-20}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz/smoke.sh: FUZZ_SECONDS must be a positive whole number, got '$seconds'" >&2
    exit 2
fi

missing=()
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: toolchain '$toolchain' not installed; trying rustup toolchain install" >&2
    if ! rustup toolchain install "$toolchain" --profile minimal >&2 \
        || ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
        missing+=("the Rust $toolchain toolchain (rustup toolchain install $toolchain failed)")
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: cargo-fuzz not installed; trying cargo install cargo-fuzz --locked" >&2
    if ! cargo install cargo-fuzz --locked >&2 || ! cargo fuzz --version >/dev/null 2>&1; then
        missing+=("cargo-fuzz (cargo install cargo-fuzz --locked failed)")
    fi
fi
if ((${#missing[@]} > 0)); then
    for what in "${missing[@]}"; do
        echo "fuzz/smoke.sh: cannot fuzz: missing $what" >&2
    done
    if [[ "${FEDBROKER_SKIP_FUZZ:-}" == 1 ]]; then
        echo "fuzz/smoke.sh: FEDBROKER_SKIP_FUZZ=1, so skipping fuzzing and exiting 0" >&2
        exit 0
    fi
    echo "fuzz/smoke.sh: set FEDBROKER_SKIP_FUZZ=1 to skip fuzzing where these cannot be installed" >&2
    exit 2
fi

cd "$here" || exit 2
echo "fuzz/smoke.sh: $(rustup run "$toolchain" rustc --version), $(cargo fuzz --version)"

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi
if ((${#targets[@]} == 0)); then
    echo "fuzz/smoke.sh: no fuzz targets found" >&2
    exit 1
fi

# Build every target first so a build error is reported as such, not as a crash.
for target in "${targets[@]}"; do
    if ! cargo "+$toolchain" fuzz build "$target"; then
        echo "fuzz/smoke.sh: FAILED to build target $target" >&2
        exit 1
    fi
done

failed=()
for target in "${targets[@]}"; do
    # The first corpus directory receives new inputs (it is .gitignored); the
    # committed seeds are read as well.
    corpora=("corpus/$target")
    mkdir -p "corpus/$target"
    [[ -d "seeds/$target" ]] && corpora+=("seeds/$target")
    flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    [[ -f "dicts/$target.dict" ]] && flags+=(-dict="dicts/$target.dict")

    echo "fuzz/smoke.sh: running $target for ${seconds}s"
    if cargo "+$toolchain" fuzz run "$target" "${corpora[@]}" -- "${flags[@]}"; then
        echo "fuzz/smoke.sh: $target: no crash in ${seconds}s"
    else
        echo "fuzz/smoke.sh: $target: CRASH (inputs that failed are in fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "fuzz/smoke.sh: crashing targets: ${failed[*]}" >&2
    echo "fuzz/smoke.sh: reproduce with: cd fuzz && cargo +$toolchain fuzz run TARGET artifacts/TARGET/FILE" >&2
    exit 1
fi
echo "fuzz/smoke.sh: all ${#targets[@]} targets ran ${seconds}s without a crash"
