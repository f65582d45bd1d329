#!/usr/bin/env bash
# Runs the field scenario through the generated bindings against a real server:
# Python first (client-ffi/tests/python/test_scenario.py), then Kotlin on the JVM
# (client-ffi/tests/kotlin/Scenario.kt). Needs python3, java 17, kotlinc-jvm (KOTLINC=path,
# or on PATH, or npm's kotlin-compiler in target/kotlinc) and JNA (JNA_JAR=path, default
# /usr/share/java/jna.jar from Debian's libjna-java); .ci/run installs them.
#
#   client-ffi/tests/run-bindings-tests.sh
#
# The server runs on 127.0.0.1 with a port the kernel picks, on a fresh data folder,
# and is always stopped on exit. Every wait is bounded.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
UNIT="2025:03434"
if [ -z "${KOTLINC:-}" ]; then
    KOTLINC="$(command -v kotlinc-jvm || echo "$root/target/kotlinc/node_modules/kotlin-compiler/bin/kotlinc-jvm")"
fi
JNA_JAR="${JNA_JAR:-/usr/share/java/jna.jar}"

stamp() { date +%s; }
t0=$(stamp)

# DIEMDANH_PROFILE=debug reuses the debug build (what CI has already built); release by default.
profile_dir="${DIEMDANH_PROFILE:-release}"
if [ "$profile_dir" = release ]; then cargo_profile_flag="--release"; else cargo_profile_flag=""; fi
export DIEMDANH_PROFILE="$profile_dir"
echo "== build ($profile_dir: cdylib, bindgen, server)"
cargo build $cargo_profile_flag -p diemdanh -p uniffi-bindgen -p diemdanh-server
t_build=$(( $(stamp) - t0 ))

echo "== generate bindings into target/bindings"
DIEMDANH_SKIP_BUILD=1 client-ffi/generate-bindings.sh target/bindings
server_bin="$root/target/$profile_dir/diemdanh-server"

work="$(mktemp -d -t diemdanh-bindings.XXXXXX)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== start diemdanh-server on loopback"
data="$work/server-data"
mkfifo "$work/server.out"
DIEMDANH_LOG=warn "$server_bin" serve --data "$data" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
# The first stdout line ends with the URL; keep reading the fifo in the background so
# the server never blocks on a full pipe.
exec 3<"$work/server.out"
if ! IFS= read -r -t 60 first <&3; then
    echo "the server printed no first line within 60 s" >&2
    cat "$work/server.err" >&2 || true
    exit 1
fi
cat <&3 >/dev/null &
url="${first##* }"
case "$url" in
    http://127.0.0.1:*) echo "server at $url" ;;
    *) echo "unexpected first line from the server: $first" >&2; exit 1 ;;
esac

code() { "$server_bin" enroll-code --data "$data" --unit "$UNIT" | tail -1; }
export DIEMDANH_SERVER_URL="$url" DIEMDANH_SERVER_DATA="$data" DIEMDANH_SERVER_BIN="$server_bin"
export DIEMDANH_TEST_TMP="$work"

echo "== Python scenario"
t1=$(stamp)
DIEMDANH_CODE_A="$(code)" DIEMDANH_CODE_B="$(code)" PYTHONPATH="$root/target/bindings/python" \
    timeout 300 python3 client-ffi/tests/python/test_scenario.py
t_python=$(( $(stamp) - t1 ))

echo "== Kotlin scenario (compile with kotlinc-jvm, run on the JVM with JNA)"
t2=$(stamp)
jar="$work/scenario.jar"
timeout 600 "$KOTLINC" -nowarn -cp "$JNA_JAR" \
    target/bindings/kotlin/uniffi/diemdanh/diemdanh.kt client-ffi/tests/kotlin/Scenario.kt \
    -include-runtime -d "$jar"
t_kotlinc=$(( $(stamp) - t2 ))
t3=$(stamp)
DIEMDANH_CODE_A="$(code)" DIEMDANH_CODE_B="$(code)" \
    timeout 300 java -cp "$jar:$JNA_JAR" -Djna.library.path="$root/target/$profile_dir" ScenarioKt
t_kotlin=$(( $(stamp) - t3 ))

echo "== timings: build ${t_build}s, python scenario ${t_python}s, kotlinc ${t_kotlinc}s, kotlin scenario ${t_kotlin}s"
