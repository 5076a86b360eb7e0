#!/usr/bin/env bash
# Issues 7 and 15's GPU measurements in one command, on a machine with one NVIDIA GPU (H100/H200):
#
#     bash bench/gpu.sh                        # from the repository root; the device tool: run(command="bash bench/gpu.sh", carry=[".whl"])
#     GPU_DEADLINE=900 bash bench/gpu.sh       # more time for every step (default: the whole script in 540 s)
#     STEPS="tests generation" bash bench/gpu.sh   # only some steps (rerun what failed)
#
# Steps, in this order, each time-boxed with `timeout` and failure-tolerant (a failing step prints
# its error and the script goes on; the exit code says whether any failed):
#   wheels      installs carried wheels (.whl/*.whl: pytest, pluggy, iniconfig, bitsandbytes) into
#               /tmp/site; hfpipe itself goes on PYTHONPATH from the working tree (the image has
#               torch, transformers, accelerate, peft, tokenizers; nothing here needs datasets)
#   versions    versions, the GPU, nvidia-smi
#   tests       tests/test_gpu.py: bf16, the flash kernel, compile == eager, QLoRA 4-bit, and the
#               inference verbs (generate, in-context scores, perplexity) on CUDA against CPU
#   speed       bench/speed.py eager: MLM 128/512 at BERT-base, CLM 1024 at GPT-2 small, span
#               568 -> 512/114 at T5-base, bf16, against the transformers references
#   compile     the same with the hfpipe side under torch.compile (~1 min of compiling per row)
#   peft        bench/peft_memory.py: peak GPU memory and step time, full vs LoRA vs QLoRA (NF4),
#               BERT-base encoder and a SmolLM2-135M-shaped decoder, batch 16 x 512, one table
#   generation  bench/generation.py: KV-cache greedy generation tokens/s, hfpipe vs GPT2LMHeadModel,
#               GPT-2 small, bf16, batch 1 and 32, 256 new tokens
#
# Results (md + json, each with the GPU name, versions and date) go to a staging folder that is
# packed after every step into $OUT/gpu-results.tar.gz, with all tables in $OUT/gpu-summary.md and
# the whole log in $OUT/gpu-log.txt (the device tool brings back at most 8 files). Without $OUT the
# staging folder is bench/results/. Unpack here with
#     tar -xzf /work/.device/.../gpu-results.tar.gz -C bench/results
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY=${PYTHON:-python3}
DEADLINE=${GPU_DEADLINE:-540}  # seconds for the whole script; each step gets min(its cap, what is left - later steps' share)
ORDER=(wheels versions tests speed compile peft generation)
STEPS=${STEPS:-${ORDER[*]}}
# seconds kept for each later step while an earlier one runs (about what it needs on an H200)
declare -A SHARE=([wheels]=15 [versions]=10 [tests]=60 [speed]=60 [compile]=120 [peft]=70 [generation]=45)
RESULTS=${OUT:+/tmp/hfpipe-gpu-results}
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
if [ -n "${OUT:-}" ]; then  # the whole log comes back too, not only the tail
    mkdir -p "$OUT" && exec > >(tee "$OUT/gpu-log.txt") 2>&1
fi
SECONDS=0
failed=()

pack() {  # after every step: a run cut short still returns what finished
    [ -n "${OUT:-}" ] || return 0
    tar -czf "$OUT/gpu-results.tar.gz" -C "$RESULTS" . 2>/dev/null
    for f in "$RESULTS"/*.md; do [ -e "$f" ] && { echo "## $(basename "$f")"; cat "$f"; echo; }; done > "$OUT/gpu-summary.md"
}

# step NAME CAP COMMAND...: run COMMAND for at most CAP seconds, keeping the SHARE of every later
# step in $STEPS free before the deadline; skipped unless NAME is in $STEPS, or when under 15 s are left.
step() {
    local name=$1 cap=$2 reserve=0 later=0 s
    shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    for s in "${ORDER[@]}"; do
        [ $later -eq 1 ] && [[ " $STEPS " == *" $s "* ]] && reserve=$((reserve + SHARE[$s]))
        [ "$s" = "$name" ] && later=1
    done
    local left=$((DEADLINE - SECONDS - reserve))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 15 ]; then
        echo "== $name: skipped, ${left}s left before the deadline"; failed+=("$name(no time)"); return 0
    fi
    echo "== $name (at ${SECONDS}s, limit ${limit}s)"
    local started=$SECONDS
    if declare -F "$1" > /dev/null; then  # a function of this script: timeout runs programs only
        timeout -k 10 "$limit" bash -c "$*"
    else
        timeout -k 10 "$limit" "$@"
    fi
    local rc=$?
    if [ $rc -eq 0 ]; then
        echo "== $name: ok in $((SECONDS - started))s"
    else
        [ $rc -eq 124 ] && echo "== $name: TIMED OUT after ${limit}s" || echo "== $name: FAILED (exit $rc)"
        failed+=("$name")
    fi
    pack
}

install_wheels() {
    compgen -G ".whl/*.whl" > /dev/null || { echo "no .whl/*.whl carried"; return 0; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
}
export PY
export -f install_wheels
step wheels 60 install_wheels
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

versions() {
    "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch, hfpipe
names = ["torch", "transformers", "accelerate", "peft", "tokenizers", "huggingface_hub", "safetensors",
         "bitsandbytes", "pytest", "datasets", "triton"]
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "absent"
print(f"python {platform.python_version()}, CUDA {torch.version.cuda}, "
      + ", ".join(f"{n} {version(n)}" for n in names) + f"; hfpipe {hfpipe.__version__} from {hfpipe.__file__}")
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0))
EOF
    local rc=$?
    nvidia-smi || true
    return $rc
}
export -f versions
step versions 30 versions

# the image's own pytest plugins may not load under the carried pytest: only conftest.py's
step tests 130 env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py

step speed 80 "$PY" bench/speed.py --device cuda --compile none --steps 10 --repeats 3 --warmup 3 --out "$RESULTS"
step compile 190 "$PY" bench/speed.py --device cuda --compile hfpipe --steps 10 --repeats 2 --warmup 2 --out "$RESULTS"
step peft 90 "$PY" bench/peft_memory.py --arch bert-base smollm2-135m --device cuda --batch 16 --seq 512 \
    --steps 5 --warmup 2 --out "$RESULTS"
step generation 70 "$PY" bench/generation.py --device cuda --batch 1 32 --new-tokens 256 --repeats 2 --out "$RESULTS"

pack
echo "== done in ${SECONDS}s; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
