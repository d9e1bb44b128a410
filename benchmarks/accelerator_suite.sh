#!/usr/bin/env bash
# The accelerator measurements as one command, under 8 minutes on one H100/H200 host.
#
#   bash benchmarks/accelerator_suite.sh           # GPU / TPU host; appends to benchmarks/RESULTS.md
#   bash benchmarks/accelerator_suite.sh --small   # CPU smoke run at tiny shapes (the test runs it)
#
# Parts, in this order, each in its own process under a time budget (the suite stops starting
# parts at 465 s):
#   B, B_remat      ViT-B bf16 train step, batch 32 on one device, remat off / on, attention
#                   'best' (cuDNN on a GPU, XLA if that fails or elsewhere): step time, MFU
#   pipeline        the input pipeline on all host cores (benchmarks/bench_pipeline.py)
#   L, L_remat      the same for ViT-L, batch 16
#   B_max_batch     ViT-B's largest batch on one device (remat off; doubling + bisection)
# then the ratio pipeline clips/s / (ViT-B train-step clips/s per device x local devices):
# >= 1 means the accelerators never wait for data.
#
# A part that fails or runs out of time is reported and the rest still run; the exit status is 1
# if any part failed. The dated section (date, devices, table, JSON lines) is appended to
# $RESULTS: benchmarks/RESULTS.md, or with --small /tmp/mgm_accelerator_suite.md. The processes
# share a JAX compilation cache ($JAX_COMPILATION_CACHE_DIR, default: fresh, in the work dir).
set -u
cd "$(dirname "$0")/.."

SMALL=0
for arg in "$@"; do
  case "$arg" in
    --small) SMALL=1 ;;
    *) echo "usage: bash benchmarks/accelerator_suite.sh [--small]" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d /tmp/mgm_accelerator_suite.XXXXXX)
if [[ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]]; then
  export JAX_COMPILATION_CACHE_DIR=$WORK/jax_cache
  trap 'rm -rf "$WORK/jax_cache"' EXIT
fi
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
BENCH="python benchmarks/bench_train_step.py"
CORES=$(nproc)
if (( SMALL )); then
  RESULTS=${RESULTS:-/tmp/mgm_accelerator_suite.md}
  TOTAL_S=900 BUDGET_S=240
  # Tiny stand-ins for ViT-B and ViT-L (identical, so the second compile is a cache hit); XLA:CPU
  # without its expensive LLVM passes compiles about 2x faster.
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  SHAPE="--size=tiny --encoder_depth=1 --decoder_depth=1 --frames=4 --img=32 --dtype=bfloat16"
  SHAPE="$SHAPE --attention=best --steps=2 --rounds=2 --warmup=1"
  B="$SHAPE --batch=2" L="$SHAPE --batch=2"
  MAX_BATCH="$SHAPE --batch=2 --max_batch=4 --search_s=60"
  PIPELINE="--small"
else
  RESULTS=${RESULTS:-benchmarks/RESULTS.md}
  TOTAL_S=465 BUDGET_S=0
  SHAPE="--frames=16 --img=224 --dtype=bfloat16 --attention=best"
  B="--size=B --batch=32 $SHAPE" L="--size=L --batch=16 $SHAPE"
  MAX_BATCH="--size=B --batch=32 $SHAPE --max_batch=1024 --search_s=45"
  PIPELINE="--num_clips=256"
fi
DEADLINE=$((SECONDS + TOTAL_S))
FAILED=() SKIPPED=()

run_part() {  # run_part NAME BUDGET_S COMMAND...: stdout -> NAME.out, last JSON line -> NAME.json
  local name=$1 budget=$2 left=$((DEADLINE - SECONDS)) rc why
  shift 2
  (( BUDGET_S )) && budget=$BUDGET_S
  (( budget > left )) && budget=$left
  if (( budget < 20 )); then
    echo "== $name: not run, the suite's time budget is spent"
    FAILED+=("$name: no time left")
    return
  fi
  echo "== $name (budget ${budget} s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$budget" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  rc=$?
  grep -v '^{' "$WORK/$name.out"
  echo "-- $name: $((SECONDS - t0)) s"
  if (( rc == 0 )) && grep -q '^{' "$WORK/$name.out"; then
    grep '^{' "$WORK/$name.out" | tail -n 1 >"$WORK/$name.json"
  else
    if (( rc == 124 || rc == 137 )); then why="timed out after $budget s"; else why="exit $rc"; fi
    echo "!! $name FAILED ($why); the end of $WORK/$name.err:"
    tail -n 8 "$WORK/$name.err"
    FAILED+=("$name: $why")
  fi
}

START=$SECONDS
run_part B 90 $BENCH $B
run_part B_remat 60 $BENCH $B --remat
if [[ -f benchmarks/bench_pipeline.py ]]; then
  run_part pipeline 90 python benchmarks/bench_pipeline.py --threads="$CORES" $PIPELINE
else
  echo "== pipeline: skipped, benchmarks/bench_pipeline.py does not exist yet"
  SKIPPED+=("pipeline: benchmarks/bench_pipeline.py does not exist yet")
fi
run_part L 110 $BENCH $L
run_part L_remat 90 $BENCH $L --remat
XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 run_part B_max_batch 70 $BENCH --mode=max_batch $MAX_BATCH

NVSMI=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sort | uniq -c | sed 's/^ *//' | paste -sd ';' -)
FAILED_LIST=$(printf '%s\n' "${FAILED[@]+"${FAILED[@]}"}") \
SKIPPED_LIST=$(printf '%s\n' "${SKIPPED[@]+"${SKIPPED[@]}"}") \
WORK=$WORK RESULTS=$RESULTS SMALL=$SMALL NVSMI=$NVSMI CORES=$CORES WALL_S=$((SECONDS - START)) \
python - <<'PY' || FAILED+=("report")
"""Appends the dated section to $RESULTS and prints it."""
import datetime, json, os, pathlib

env, work = os.environ, pathlib.Path(os.environ['WORK'])
order = ('B', 'B_remat', 'pipeline', 'L', 'L_remat', 'B_max_batch')
runs = {k: json.loads((work / f'{k}.json').read_text()) for k in order
        if (work / f'{k}.json').exists()}
failed = [s for s in env['FAILED_LIST'].splitlines() if s]
skipped = [s for s in env['SKIPPED_LIST'].splitlines() if s]
train = [(k, runs[k]) for k in ('B', 'B_remat', 'L', 'L_remat') if k in runs]
first = train[0][1] if train else runs.get('B_max_batch', {})
kind = first.get('device', 'unknown device')

summary = {'benchmark': 'accelerator_suite', 'small': env['SMALL'] == '1', 'device': kind,
           'jax_devices': first.get('jax_devices'), 'local_devices': first.get('local_devices'),
           'nvidia_smi': env['NVSMI'] or None, 'host_cores': int(env['CORES']),
           'wall_s': int(env['WALL_S']), 'failed': failed, 'skipped': skipped}
for name, r in train:
  summary[f'{name}_clips_per_s'], summary[f'{name}_mfu'] = r['clips_per_s'], r['mfu']
if 'B_max_batch' in runs:
  summary['B_max_batch'] = runs['B_max_batch']['max_batch']
pipe = runs.get('pipeline', {}).get('clips_per_s')
summary['pipeline_clips_per_s'] = pipe
if pipe is not None and 'B' in runs:
  host_train = runs['B']['clips_per_s'] * (runs['B']['local_devices'] or 1)
  summary['ratio_pipeline_over_train_B'] = round(pipe / host_train, 3)

fmt = lambda v, f='{:.1f}': 'n/a' if v is None else f.format(v)
lines = [f"## {datetime.date.today().isoformat()} — accelerator suite on {kind}"
         f"{' (--small: tiny CPU stand-ins, not ViT-B/L)' if summary['small'] else ''}", '',
         f"`bash benchmarks/accelerator_suite.sh{' --small' if summary['small'] else ''}`, "
         f"{summary['wall_s']} s. `jax.devices()`: `{summary['jax_devices']}`; "
         f"nvidia-smi: {env['NVSMI'] or 'n/a'}; host: {env['CORES']} cores.", '',
         '| run | model | remat | attention | batch / device | step ms | clips/s / device '
         '| TFLOP/s | MFU |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
for name, r in train:
  lines.append(f"| {name} | {r['size']} {r['dtype']} | {'on' if r['remat'] else 'off'} | "
               f"{r['attention']} | {r['batch']} | {r['step_ms']:.1f} | {r['clips_per_s']:.1f} | "
               f"{r['tflops']:.1f} | {fmt(r['mfu'] and 100 * r['mfu'], '{:.1f}%')} |")
lines.append('')
if 'B_max_batch' in runs:
  m = runs['B_max_batch']
  lines.append(f"Largest {m['size']} batch on one device (remat {'on' if m['remat'] else 'off'}, "
               f"attention {m['attention']}): {m['max_batch']} (first out-of-memory: "
               f"{m['first_oom']}; the search stopped by {m['limited_by']}).")
lines.append(f"Input pipeline on {env['CORES']} cores: {fmt(pipe)} clips/s. Pipeline / train step"
             f" (B, remat off, x {first.get('local_devices')} local devices): "
             f"{fmt(summary.get('ratio_pipeline_over_train_B'), '{:.3f}')} (>= 1: the "
             'accelerators never wait for data).')
lines.append(f"Failed: {'; '.join(failed) or 'none'}. Skipped: {'; '.join(skipped) or 'none'}.")
lines += ['', '```'] + [json.dumps(r) for r in runs.values()] + [json.dumps(summary), '```', '']
text = '\n'.join(lines)
with open(env['RESULTS'], 'a') as f:
  f.write('\n' + text)
print(f"\n== appended to {env['RESULTS']}:\n\n{text}")
PY

if (( ${#FAILED[@]} )); then
  echo "FAILED parts: ${FAILED[*]}"
  exit 1
fi
echo "all parts ran (logs in $WORK)"
