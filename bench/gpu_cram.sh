#!/usr/bin/env bash
# Issue 26's GPU row: does pretraining pay off when the budget is one GPU instead of two CPU cores?
# experiments/pays_off.py's protocol with arm gpu-small (recipes/pretrain/cram-gpu-encoder-wiki.yaml:
# BERT-small, masked LM on English Wikipedia, bf16), then SST-2 at 1,000 and 8,000 labels, three seeds,
# crammed against its random twin. Two steps:
#
#     bash bench/gpu_cram.sh stage     # here, once: .gpu-cram/ (in .gitignore) gets SST-2's two TSVs, the
#                                      #   lock's wheels of the Hugging Face stack for the device's Python
#                                      #   3.12, and as much of the Wikipedia text as the device's 64 MiB
#                                      #   of travelling files leave room for (whole articles, xz)
#     bash bench/gpu_cram.sh run       # there: the device tool's run(command="bash bench/gpu_cram.sh run",
#                                      #   carry=[".gpu-cram"], timeout_s=600)
#
# BUDGET (default 7m) is the pretraining's wall time: a device command runs 10 minutes at most, and the
# tokenizer, the data and the six finetuning runs take the rest. A row per budget: run again with another
# BUDGET on a fresh machine (runs/ does not survive it). Results come back in $OUT: pretrain.json,
# finetune.json, results.md and the label curve, as experiments/results/pays_off/ holds them, and the log.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.gpu-cram
LIMIT_MIB=62  # of the device's 64 MiB of travelling files; the rest is kept for what changes meanwhile

stage() {
    rm -rf "$STAGE" && mkdir -p "$STAGE/data/glue/SST-2" "$STAGE/data/text" "$STAGE/whl"
    cp ../shared/data/glue/SST-2/train.tsv ../shared/data/glue/SST-2/dev.tsv "$STAGE/data/glue/SST-2/"
    # The lock's versions of what hfpipe imports, less what the image has at any version that works
    # (torch, numpy, scipy, scikit-learn, pandas, pyarrow, matplotlib, tensorboard) and what this run
    # never imports (test tools, trl, bitsandbytes, seqeval: tagging only, and published as source only).
    grep '==' ci/locked.txt | grep -v -i -E '^(torch|numpy|scipy|scikit-learn|pandas|pyarrow|matplotlib|pillow|fonttools|kiwisolver|contourpy|tensorboard|tensorboard-data-server|grpcio|protobuf|nvidia|triton|sympy|mpmath|networkx|jinja2|markupsafe|bitsandbytes|pytest|hypothesis|pluggy|iniconfig|execnet|pytest-xdist|trl|seqeval|setuptools|pip|absl-py|markdown|werkzeug|joblib|threadpoolctl)==' \
        > "$STAGE/requirements.txt"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$STAGE/whl" -r "$STAGE/requirements.txt"
    # Wikipedia: whole articles (WikiExtractor's <doc> ... </doc>) until the compressed text fills the room left.
    local used room
    used=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -sb "$STAGE" | cut -f1) ))
    room=$(( LIMIT_MIB * 1024 * 1024 - used ))
    # xz packs this text about 3.6 to 1: read that much raw text, then drop articles from the end until it fits
    local raw=$(( room * 36 / 10 ))
    while :; do
        # (an article cut by head is dropped whole: awk prints an article only at its </doc>; xzcat,
        # stopped by head, exits on SIGPIPE, which is no failure here)
        { xzcat ../shared/data/text/enwiki-2015.txt.xz || true; } | head -c "$raw" \
            | awk '{ article = article $0 "\n" } /^<\/doc>/ { printf "%s", article; article = "" }' \
            | xz -T2 -6 > "$STAGE/data/text/enwiki-2015.txt.xz"
        (( $(stat -c %s "$STAGE/data/text/enwiki-2015.txt.xz") <= room )) && break
        raw=$(( raw * 9 / 10 ))
    done
    echo "staged $(du -sh "$STAGE" | cut -f1) in $STAGE: $(ls "$STAGE/whl" | wc -l) wheels, SST-2, $(( raw / 1000000 )) MB of Wikipedia text"
}

run() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STAGE"/whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    # the recipes and pays_off.py read ../shared/data, beside the repository, as on a developer's machine
    mkdir -p ../shared && ln -sfn "$PWD/$STAGE/data" ../shared/data
    local out=${OUT:-bench/results/gpu-cram} log
    mkdir -p "$out" && log="$out/gpu-cram-log.txt"
    { nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
      python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
      python3 experiments/pays_off.py pretrain --arm gpu-small --budget "${BUDGET:-7m}"
      python3 experiments/pays_off.py finetune --arm gpu-small --tasks sst2 --labels 1000 8000 --parallel 1
    } 2>&1 | tee "$log"
    cp experiments/results/pays_off/{pretrain.json,finetune.json,results.md,sst2-accuracy-vs-labels.png} "$out/"
}

case "${1:-}" in
    stage) stage ;;
    run) run ;;
    *) echo "usage: bash bench/gpu_cram.sh stage|run" >&2; exit 2 ;;
esac
