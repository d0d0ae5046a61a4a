#!/usr/bin/env bash
# Fresh-clone setup timing: `make demo` (setup + run) and `make test`'s setup, with no pip cache,
# plus the llama-cpp-python wheel built with podium's CMAKE_ARGS vs llama-cpp-python's defaults.
# Usage: bench/bench_setup.sh [REPO] [BRANCH]   (writes bench/results/setup.md of the current tree)
# Slow (tens of minutes on a loaded 2-core machine): run it niced in the background.
set -uo pipefail
REPO=${1:-$(git rev-parse --show-toplevel)}
BRANCH=${2:-$(git rev-parse --abbrev-ref HEAD)}
OUT=${OUT:-$(pwd)/bench/results/setup.md}
WORK=$(mktemp -d /tmp/podium-setup.XXXXXX)
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset CMAKE_ARGS
FMT='%e s wall, %U s user + %S s system CPU'

row() {  # name, command...: time one step, append a table row with the load before and after
  local name=$1; shift
  local before after
  before=$(cut -d' ' -f1-3 /proc/loadavg)
  /usr/bin/time -f "$FMT" -o "$WORK/time" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  after=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "| $name | $(cat "$WORK/time" | tail -1) | $before | $after | $rc |" >> "$OUT"
  echo "[$(date -u +%H:%M:%S)] $name done: $(tail -1 "$WORK/time") (rc $rc)"
}

{
  echo "# Setup timing on a fresh clone (no pip cache)"
  echo
  echo "Produced by \`bench/bench_setup.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), branch \`$BRANCH\`,"
  echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Python $(python3 -c 'import sys; print(sys.version.split()[0])')."
  echo "The machine is shared: the load average (1, 5, 15 min) is shown before and after each step;"
  echo "CPU seconds (user + system) are the load-independent measure of the work."
  echo "\`uptime\` at start: $(uptime)"
  echo
  echo "| step | time | load before | load after | exit |"
  echo "|---|---|---|---|---|"
} > "$OUT"

git clone -q -b "$BRANCH" "$REPO" "$WORK/podium"
cd "$WORK/podium"
row "make setup-local (demo's setup: venv + llama-cpp-python build)" make setup-local
row "make demo (the run itself, setup done)" make demo
row "make setup (the rest of make test's setup)" make setup
VERSION=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
cd "$WORK"
python3 -m venv wheelenv && wheelenv/bin/pip install -q build >/dev/null 2>&1
row "llama-cpp-python $VERSION wheel, podium CMAKE_ARGS" env CMAKE_ARGS="$(sed -n 's/^CMAKE_ARGS ?= //p' podium/Makefile)" wheelenv/bin/pip wheel --no-deps -w wheels-podium "llama-cpp-python==$VERSION"
row "llama-cpp-python $VERSION wheel, default CMake options" wheelenv/bin/pip wheel --no-deps -w wheels-default "llama-cpp-python==$VERSION"
{
  echo
  echo "Wheel sizes: podium flags $(du -k wheels-podium/*.whl 2>/dev/null | cut -f1) KiB, defaults $(du -k wheels-default/*.whl 2>/dev/null | cut -f1) KiB."
  echo "\`uptime\` at end: $(uptime)"
  echo
  echo "Demo output (the run above):"
  echo
  echo '```'
  tail -20 "$WORK/make demo (the run itself, setup done).log"
  echo '```'
} >> "$OUT"
echo "wrote $OUT; logs in $WORK"
