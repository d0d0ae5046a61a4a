#!/usr/bin/env bash
# Topologies on the embedded pool (SmolLM2-135M via llama.cpp), into the folders of run_embedded.sh so
# resume reuses the graded single-model and rules runs: best-of-n with 2 samples (the 3-step budget of
# the rules runs: 2 samples + the pick, done by the check when a sample passes) and the conductor
# (SmolLM2 rarely writes a valid plan: it falls back to chain). Not niced (the main measurement).
#   bash bench/run_embedded_topologies.sh mbpp K/4    # best-of-n on a quarter of the 200 MBPP items, then
#                                                     # the MBPP conductor in nested seeded prefixes of 20
#   bash bench/run_embedded_topologies.sh gsm8k K/2   # best-of-n, then the conductor, on half of 40 GSM8K items
# As run: the six parts at once, each in its own session (setsid: the kernel's autogroups share the CPU
# per session, so a session's processes compete as one), i.e. mbpp 0/4..3/4, gsm8k 0/2 and 1/2. A
# stopped MBPP conductor leaves a finished seeded prefix (all its shards did every item before it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/main/.venv/bin/python}
PART=$1
SHARD=$2
export PODIUM_HOME=${PODIUM_HOME:-/tmp/podium-bench-home}   # traces of these runs stay out of the user's store
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
common=(--pool embedded --seed 0 --max-turns 3 --call-max-tokens 256 --shard "$SHARD" --no-plot)
MBPP=(../shared/data/tasks/mbpp/mbpp_sanitized_427.jsonl --out bench/results/embedded_mbpp)
GSM=(../shared/data/tasks/gsm8k/test.jsonl.gz --out bench/results/embedded_gsm8k)
tag=${PART}_${SHARD/\//of}
uptime > "bench/results/embedded_topologies_load_start_$tag.txt"
if [ "$PART" = gsm8k ]; then
    "$PY" -m podium bench run "${GSM[@]}" --limit 40 --coordinators topology:best-of-n:2 "${common[@]}"
    "$PY" -m podium bench run "${GSM[@]}" --limit 40 --coordinators conductor "${common[@]}"
    uptime > "bench/results/embedded_topologies_load_end_$tag.txt"
    exit 0
fi
"$PY" -m podium bench run "${MBPP[@]}" --limit 200 --coordinators topology:best-of-n:2 "${common[@]}"
uptime > "bench/results/embedded_topologies_load_end_bon_$tag.txt"
for limit in 20 40 60 80 100 120 140 160 180 200; do
    "$PY" -m podium bench run "${MBPP[@]}" --limit "$limit" --coordinators conductor "${common[@]}"
    uptime > "bench/results/embedded_topologies_load_end_$tag.txt"
done
