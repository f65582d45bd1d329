#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python bindings of the `diemdanh` library:
#
#   client-ffi/generate-bindings.sh OUTDIR
#
# writes OUTDIR/kotlin (uniffi/diemdanh/diemdanh.kt), OUTDIR/swift (diemdanh.swift,
# diemdanhFFI.h, diemdanhFFI.modulemap) and OUTDIR/python (diemdanh.py, with the host's
# libdiemdanh.so copied beside it: Python loads the library from the module's folder).
#
# It builds the release cdylib and the generator first (the generator reads the
# bindings' description from the compiled library: uniffi's library mode). Set
# DIEMDANH_SKIP_BUILD=1 when both are already built. Bindings are the same for every
# target: generate them once on the host, then ship each target's .so with them (see
# docs/MOBILE.md).
set -euo pipefail
# DIEMDANH_PROFILE=debug uses the debug build (CI builds it anyway); release by default.
profile_dir="${DIEMDANH_PROFILE:-release}"
if [ "$profile_dir" = release ]; then cargo_profile_flag="--release"; else cargo_profile_flag=""; fi

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
cd "$root"

if [ "${DIEMDANH_SKIP_BUILD:-0}" != 1 ]; then
    cargo build $cargo_profile_flag -p diemdanh -p uniffi-bindgen
fi
lib="$root/target/$profile_dir/libdiemdanh.so"
bindgen="$root/target/$profile_dir/uniffi-bindgen"
for f in "$lib" "$bindgen"; do
    [ -e "$f" ] || { echo "missing $f: build with cargo build $cargo_profile_flag -p diemdanh -p uniffi-bindgen" >&2; exit 1; }
done

rm -rf "$out/kotlin" "$out/swift" "$out/python"
# -n: no formatter (ktlint, swiftformat, yapf) is needed.
for lang in kotlin swift python; do
    "$bindgen" generate "$lib" --language "$lang" --no-format --out-dir "$out/$lang"
done
cp "$lib" "$out/python/"
echo "bindings written to $out/{kotlin,swift,python}"
