#!/usr/bin/env bash
# Fresh-clone setup timing: `make demo` (setup + run) and `make test`'s setup, with no pip cache,
# plus what podium's CMAKE_ARGS save: the objects llama-cpp-python's default options add, compiled alone.
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
PODIUM_CMAKE=$(sed -n 's/^CMAKE_ARGS ?= //p' Makefile)
cd "$WORK"
# What the CMake arguments save: configure llama-cpp-python's sdist both ways, count the build steps,
# and compile only the objects the default build has and podium's does not (a full second build
# would take as long again).
python3 -m pip download -q --no-deps --no-binary :all: -d sdist "llama-cpp-python==$VERSION" >/dev/null 2>&1
tar xzf sdist/*.tar.gz -C sdist && SRC=$(ls -d sdist/llama_cpp_python-*/)
cmake -G Ninja -S "$SRC" -B cfg-default -DCMAKE_BUILD_TYPE=Release > cfg-default.log 2>&1
cmake -G Ninja -S "$SRC" -B cfg-podium -DCMAKE_BUILD_TYPE=Release $PODIUM_CMAKE > cfg-podium.log 2>&1
objects() { ninja -C "$1" -t targets all | grep -o '^[^:]*\.o' | sort; }
comm -23 <(objects cfg-default) <(objects cfg-podium) > dropped.txt
row "compile only the $(wc -l < dropped.txt) objects the default options add" ninja -C cfg-default -j"$(nproc)" $(cat dropped.txt)
{
  echo
  echo "Build steps: default options $(ninja -C cfg-default -n | tail -1 | cut -d' ' -f1), podium's CMAKE_ARGS $(ninja -C cfg-podium -n | tail -1 | cut -d' ' -f1);"
  echo "objects: $(objects cfg-default | wc -l) vs $(objects cfg-podium | wc -l); the dropped ones: $(sed 's|/CMakeFiles.*||' dropped.txt | sort | uniq -c | xargs)."
} >> "$OUT"
{
  echo
  echo "\`uptime\` at end: $(uptime)"
  echo
  echo "Demo output (the run above):"
  echo
  echo '```'
  tail -20 "$WORK/make demo (the run itself, setup done).log"
  echo '```'
} >> "$OUT"
echo "wrote $OUT; logs in $WORK"
