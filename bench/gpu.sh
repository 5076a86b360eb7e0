#!/usr/bin/env bash
# Issue 7's GPU measurements in one command, on a machine with one NVIDIA GPU (H100/H200):
#
#     bash bench/gpu.sh                        # from the repository root; the device tool: run(command="bash bench/gpu.sh")
#     COMPILE_MODES="none hfpipe both" bash bench/gpu.sh
#     SKIP_TESTS=1 SPEED_ARGS="--rows clm-1024 --steps 40" bash bench/gpu.sh
#
# 1. installs carried wheels (.whl/*.whl, if any) into /tmp/site, and puts hfpipe itself on
#    PYTHONPATH from the working tree (no install, no dependencies: the image has torch,
#    transformers, accelerate, tokenizers; the speed suite needs nothing else)
# 2. prints versions and nvidia-smi
# 3. runs the CUDA-only tests (tests/test_gpu.py: bf16, the flash kernel, torch.compile, QLoRA in
#    4-bit; the QLoRA test skips unless a bitsandbytes wheel was carried)
# 4. runs bench/speed.py once per torch.compile mode in COMPILE_MODES (default "none hfpipe": eager,
#    then the hfpipe side compiled against the same eager reference), at the issue's sizes in bf16,
#    writing speed-<gpu>-base-<date>[-compile-<mode>].{md,json} to bench/results/ and to $OUT when set.
#    Each row is saved as it finishes, so a run cut short keeps its finished rows.
#
# Wheels to carry (the image lacks them): pytest with pluggy and iniconfig for step 3, and
# bitsandbytes for its QLoRA test; see /work/.library/device/README.md for the pip download line.
# On the device machine only $OUT comes back: copy its speed-*.{md,json} into bench/results/ here
# and commit them. Budget: eager ~2 min, each compiled mode a few minutes more (one compile per
# model); if one call would pass 10 minutes, run the modes in separate calls (COMPILE_MODES=...).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
if [ -n "${OUT:-}" ]; then  # the whole log comes back too, not only the tail
    mkdir -p "$OUT" && exec > >(tee "$OUT/gpu-log.txt") 2>&1
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

echo "== versions"
"$PY" - <<'EOF' || exit 1
import platform, torch, transformers, accelerate, tokenizers, hfpipe
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}, accelerate {accelerate.__version__}, tokenizers {tokenizers.__version__}, "
      f"hfpipe {hfpipe.__version__} from {hfpipe.__file__}")
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0))
EOF
nvidia-smi || true

status=0
if [ -z "${SKIP_TESTS:-}" ]; then
    echo "== CUDA tests (tests/test_gpu.py)"
    "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py && echo "CUDA tests passed" || status=1
fi

for mode in ${COMPILE_MODES:-none hfpipe}; do
    echo "== speed suite, compile: $mode"
    # shellcheck disable=SC2086  # SPEED_ARGS is a list of arguments
    "$PY" bench/speed.py --device cuda --compile "$mode" --save ${OUT:+--out "$OUT"} ${SPEED_ARGS:-} || status=1
done
exit $status
