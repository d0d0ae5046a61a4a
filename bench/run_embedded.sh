#!/usr/bin/env bash
# MBPP and GSM8K on the embedded pool (SmolLM2-135M via llama.cpp): the single model (fixed) vs the
# rules loop with the task's executable check as verifier. With 3 turns the rules coordinator skips the plan:
# worker, check, and the worker again with the failing test output. Resumable: rerun to continue.
# Each benchmark is one process (llama.cpp serialises calls per process), both niced.
#   bash bench/run_embedded.sh [MBPP_N] [GSM8K_N]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/main/.venv/bin/python}
MBPP_N=${1:-200}
GSM_N=${2:-40}
export PODIUM_HOME=${PODIUM_HOME:-/tmp/podium-bench-home}   # traces of these runs stay out of the user's store
common=(--pool embedded --coordinators rules --seed 0 --max-turns 3 --call-max-tokens 256)
uptime > bench/results/embedded_load_start.txt
nice -n 10 "$PY" -m podium bench run ../shared/data/tasks/mbpp/mbpp_sanitized_427.jsonl --limit "$MBPP_N" \
    --out bench/results/embedded_mbpp "${common[@]}" > bench/results/embedded_mbpp.log 2>&1 &
nice -n 10 "$PY" -m podium bench run ../shared/data/tasks/gsm8k/test.jsonl.gz --limit "$GSM_N" \
    --out bench/results/embedded_gsm8k "${common[@]}" > bench/results/embedded_gsm8k.log 2>&1 &
wait
uptime > bench/results/embedded_load_end.txt
