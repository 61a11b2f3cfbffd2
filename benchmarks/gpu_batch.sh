#!/usr/bin/env bash
# A batch of GPU work as one script: the speed benchmark alone on the GPU, then the
# MNIST / Fashion-MNIST paper configs side by side (one process each) under a wall-clock budget,
# then the CT/FM models re-evaluated at 10, 100 and 1000 sampler steps, and every NoProp model with
# the paper's 5 stochastic passes (their mean and majority vote) and with the noise-free sampler.
#
#   benchmarks/gpu_batch.sh DATA_ROOT OUT_DIR TRAIN_SECONDS [JOBS...]
#
# DATA_ROOT holds mnist/ and fashion-mnist/ (the official .gz files); OUT_DIR receives
# speed-*.json, the logs and runs.tar.gz (every run's config, metrics.csv and results.json,
# checkpoints left out). JOBS: speed, graphs (the CUDA-graph step against the eager one:
# tests/training/test_graphs.py on the GPU, before anything trains with it), or CONFIG (a shipped config, e.g. mnist-dt, run fused
# when DT), or CONFIG-gG (a CT config with --schedule-gamma G), or NAME:CONFIG:FLAG,FLAG,...
# (any flags, e.g. mnist-dt-learned:mnist-dt:--fused,--embedding,learned); default: speed and
# four configs. PYTHON and DEVICE override python3 / cuda (for a dry run on a CPU, with
# EVAL_RUNS=0: the final evaluations take minutes of a CPU). RUNS: where the runs go.
# The results of the run recorded in docs/ came from this script; docs/benchmarks.md and
# docs/reproduction.md give the exact call and the machine.
set -u
DATA=${1:?DATA_ROOT}; OUT=${2:?OUT_DIR}; SECS=${3:?TRAIN_SECONDS}; shift 3
JOBS=${*:-speed mnist-dt mnist-ct mnist-fm fashion-mnist-dt}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-/tmp/noprop-runs}
EVAL_RUNS=${EVAL_RUNS:-5}   # stochastic passes per final evaluation (0: skip it and the noise-free one)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
wants() { [[ " $JOBS " == *" $1 "* ]]; }

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

if wants graphs; then  # a wrong recorded step would spoil every run that uses it: check first
    "$PY" -m pytest -q -p no:cacheprovider tests/training/test_graphs.py > "$OUT/graphs.log" 2>&1
    echo "graphs: rc=$? $(tail -n 1 "$OUT/graphs.log")"
fi

if wants speed; then  # alone on the device, so its timings are clean
    steps=20; [[ $DEVICE == cpu ]] && steps=1
    "$PY" benchmarks/speed.py --device "$DEVICE" --steps $steps --rounds 3 --matmul-size 8192 \
        --sampler-batch 1000 --profile --json "$OUT/speed-$DEVICE.json" > "$OUT/speed.log" 2>&1
    echo "speed: rc=$? $(grep -o '"fused_speedup_over_one_block_at_a_time": [0-9.]*' "$OUT/speed.log")"
fi

train() {  # NAME CONFIG [FLAGS...]: one paper config, stopped after SECS seconds of training
    local name=$1 config=$2; shift 2
    "$PY" -m noprop train --config "$config" --data-dir "$DATA/${config%-*}" --device "$DEVICE" \
        --max-train-seconds "$SECS" --checkpoint-minutes 0 --run-dir "$RUNS/$name" --quiet "$@" \
        > "$RUNS/$name.log" 2>&1
    echo "$name: rc=$? $(tail -n 1 "$RUNS/$name/metrics.csv" 2>/dev/null)"
}
for job in $JOBS; do
    case $job in
        speed|graphs) ;;
        *-dt) train "$job" "$job" --fused & ;;
        *-backprop) train "$job" "$job" & ;;
        *-ct-g*) train "$job" "${job%-g*}" --schedule-gamma "${job##*-g}" --eval-inference-steps 20 & ;;
        *-ct|*-fm) train "$job" "$job" --eval-inference-steps 20 & ;;
        *:*:*) IFS=: read -r name config flags <<< "$job"
               IFS=, read -r -a flags <<< "$flags"
               train "$name" "$config" "${flags[@]}" & ;;
        *) echo "unknown job $job" >&2 ;;
    esac
done
wait

evaluated=()
for job in $JOBS; do
    name=${job%%:*}
    [[ $job == *-ct* || $job == *-fm* || $job == *-dt* ]] || continue
    evaluated+=("$name")
    {
        # CT/FM at 10, 100, 1000 steps; every NoProp run: the paper's 5 passes with their vote, and noise-free
        if [[ $job == *-ct* || $job == *-fm* ]]; then
            "$PY" -m noprop evaluate "$RUNS/$name" --steps 10 100 1000 --device "$DEVICE"
        fi
        if (( EVAL_RUNS > 0 )); then
            "$PY" -m noprop evaluate "$RUNS/$name" --runs "$EVAL_RUNS" --device "$DEVICE"
            "$PY" -m noprop evaluate "$RUNS/$name" --deterministic --device "$DEVICE" | sed 's/^/deterministic /'
        fi
    } > "$RUNS/$name.evaluate.txt" 2>&1 &
done
wait
for name in "${evaluated[@]}"; do echo "$name evaluate: $(tr '\n' ' ' < "$RUNS/$name.evaluate.txt")"; done
tar czf "$OUT/runs.tar.gz" --exclude=checkpoint.pt --exclude=.lock -C "$RUNS" .
