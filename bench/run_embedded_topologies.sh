#!/usr/bin/env bash
# Topologies on the embedded pool (SmolLM2-135M via llama.cpp), into the folders of run_embedded.sh so
# resume reuses the graded single-model and rules runs: best-of-n with 2 samples (the 3-step budget of
# the rules runs: 2 samples + the pick, done by the check when a sample passes) and the conductor
# (its plan falls back to chain on this model). Not niced (the main measurement).
#   bash bench/run_embedded_topologies.sh PART K/N [MBPP_CONDUCTOR_SHARD]
# PART mbpp: best-of-n on 200 MBPP items (shard K/N); PART gsm8k: best-of-n then the conductor on 40
# GSM8K items. Both then run the MBPP conductor in nested seeded prefixes of 20 items (shard
# MBPP_CONDUCTOR_SHARD, default K/N), so stopping it leaves a finished seeded prefix.
# Four shells: mbpp 0/2 0/4, mbpp 1/2 1/4, gsm8k 0/2 2/4, gsm8k 1/2 3/4 (each in its own session).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/main/.venv/bin/python}
PART=$1
SHARD=$2
COND_SHARD=${3:-$SHARD}
export PODIUM_HOME=${PODIUM_HOME:-/tmp/podium-bench-home}   # traces of these runs stay out of the user's store
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
common=(--pool embedded --seed 0 --max-turns 3 --call-max-tokens 256 --no-plot)
MBPP=(../shared/data/tasks/mbpp/mbpp_sanitized_427.jsonl --out bench/results/embedded_mbpp)
GSM=(../shared/data/tasks/gsm8k/test.jsonl.gz --out bench/results/embedded_gsm8k)
tag=${PART}_${SHARD/\//of}
uptime > "bench/results/embedded_topologies_load_start_$tag.txt"
if [ "$PART" = mbpp ]; then
    "$PY" -m podium bench run "${MBPP[@]}" --limit 200 --coordinators topology:best-of-n:2 --shard "$SHARD" "${common[@]}"
else
    "$PY" -m podium bench run "${GSM[@]}" --limit 40 --coordinators topology:best-of-n:2 --shard "$SHARD" "${common[@]}"
    "$PY" -m podium bench run "${GSM[@]}" --limit 40 --coordinators conductor --shard "$SHARD" "${common[@]}"
fi
uptime > "bench/results/embedded_topologies_load_end_$tag.txt"
for limit in 20 40 60 80 100 120 140 160 180 200; do
    "$PY" -m podium bench run "${MBPP[@]}" --limit "$limit" --coordinators conductor --shard "$COND_SHARD" "${common[@]}"
    uptime > "bench/results/embedded_topologies_load_end_$tag.txt"
done
