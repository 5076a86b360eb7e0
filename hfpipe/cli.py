"""The ``hfpipe`` command: parse, validate, call. Each verb also runs as
``accelerate launch [--config_file accelerate_configs/X.yaml] -m hfpipe VERB ...``.

Exit codes: 0 success; 2 bad recipe, option or input (one line naming the file, key or row,
before any heavy work); 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from .errors import InputError, NonFiniteLossError

DESCRIPTION = ("Pretrain and adapt transformer language models (encoder, decoder, encoder-decoder) on the "
               "Hugging Face stack: tokenizer, pretraining, finetuning, adapters, generation, evaluation.")
EPILOG = "Docs: README.md. Every verb also runs under `accelerate launch -m hfpipe VERB`."
# Deprecations one library raises against another's use of it: not the user's doing, nothing they
# can change (peft's PeftModel reads transformers' `is_gradient_checkpointing`, deprecated in 5.24).
THIRD_PARTY_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated",)


def _common(parser: argparse.ArgumentParser, needs_model: bool = False) -> None:
    parser.add_argument("recipe", help="a recipe YAML file (see recipes/)")
    parser.add_argument("--model", required=needs_model, help="checkpoint folder or Hub id[@revision]")
    parser.add_argument("--train-file", help="local training data (GLUE TSV, SQuAD JSON, CoNLL text, text/jsonl/csv)")
    parser.add_argument("--validation-file", help="local evaluation data")
    parser.add_argument("--output-dir", help="where checkpoints, metrics and the model go")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (overrides train.max_steps)")
    parser.add_argument("--seed", type=int, help="random seed (overrides train.seed)")
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU-sized version of the recipe (< 3 min)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set train.learning_rate=1e-4 (repeatable)")


def _device_options(parser: argparse.ArgumentParser) -> None:
    from .device import DEVICES, DTYPES

    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the model runs: auto = cuda, else mps, else cpu (default: auto)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="weights' precision: auto = the run's train.mixed_precision on an accelerator, "
                             "float32 on cpu (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfpipe", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    tok = verbs.add_parser("tokenizer", help="train a tokenizer").add_subparsers(dest="action", required=True)
    train = tok.add_parser("train", help="train a tokenizer on text files")
    train.add_argument("--family", required=True, choices=["encoder", "decoder", "seq2seq"])
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--out", required=True, help="folder to save the tokenizer in")
    train.add_argument("--min-frequency", type=int, default=2)
    train.add_argument("files", nargs="+", help="UTF-8 text files")

    _common(verbs.add_parser("pretrain", help="pretrain a model with its family's objective"))
    _common(verbs.add_parser("finetune", help="finetune and evaluate on a task (GLUE, SQuAD, NER, POS)"))
    evaluate = verbs.add_parser("evaluate", help="evaluate a checkpoint on a recipe's task")
    _common(evaluate, needs_model=True)
    _device_options(evaluate)
    icl = verbs.add_parser("icl", help="zero- and few-shot in-context evaluation")
    _common(icl, needs_model=True)
    _device_options(icl)
    icl.add_argument("--shots", type=int, action="append", help="demonstrations per prompt (repeatable)")

    gen = verbs.add_parser("generate", help="generate text from a decoder or encoder-decoder")
    gen.add_argument("model", help="checkpoint folder or Hub id[@revision]")
    gen.add_argument("--prompt", action="append", help="prompt text (repeatable)")
    gen.add_argument("--prompt-file", help="one prompt per line, generated as one batch")
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=1.0, help="0 means greedy")
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--num-beams", type=int, default=1)
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--do-sample", action="store_true", help="sample (implied by temperature/top-k/top-p)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--no-stream", action="store_true", help="print when done instead of token by token")
    gen.add_argument("--chat", action="store_true", help="prompt as a user turn of the tokenizer's chat template")
    _device_options(gen)

    prefs = verbs.add_parser("prefs", help="preference pairs for DPO: best and worst of k samples by a reward model")
    prefs.add_argument("--policy", required=True, help="the decoder that samples completions (folder or Hub id)")
    prefs.add_argument("--reward", required=True, help="a sequence classifier that scores prompt + completion")
    prefs.add_argument("--prompts", required=True, help="prompts: .txt (one per line) or .jsonl (--prompt-column)")
    prefs.add_argument("--output", required=True, help="the pairs, JSON lines {prompt, chosen, rejected, ...}")
    prefs.add_argument("--samples", type=int, default=4, help="completions sampled per prompt (default: 4)")
    prefs.add_argument("--reward-label", help="the rewarded label, by name or index (default: a two-label "
                       "classifier's second, e.g. positive)")
    prefs.add_argument("--prompt-column", default="prompt", help="the prompts' key in a .jsonl file")
    prefs.add_argument("--max-new-tokens", type=int, default=48)
    prefs.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0)")
    prefs.add_argument("--top-k", type=int, default=0)
    prefs.add_argument("--top-p", type=float, default=1.0)
    prefs.add_argument("--batch-size", type=int, default=8, help="prompts sampled at once")
    prefs.add_argument("--seed", type=int, default=0)
    prefs.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    _device_options(prefs)

    probe = verbs.add_parser("probe", help="cloze probing: precision@1/@10 of a model's answers to fill-in facts")
    probe.add_argument("model", help="checkpoint folder or Hub id[@revision]")
    probe.add_argument("--file", required=True,
                       help='JSON lines {"text": "... [MASK] ...", "answer": "..."}, one blank per text')
    probe.add_argument("--output-dir", help="where probe_results.json goes (default: MODEL/probe-<file name>)")
    _device_options(probe)

    conv = verbs.add_parser("convert", help="a transformers BERT / GPT-2 / T5 checkpoint -> hfpipe, or back")
    conv.add_argument("src")
    conv.add_argument("dst")
    conv.add_argument("--to", choices=["hfpipe", "transformers"], default="hfpipe",
                      help="hfpipe: import a BERT / GPT-2 / T5 checkpoint; transformers: export an hfpipe "
                           "checkpoint as BERT / GPT-2 / T5 (loads with no remote code)")

    merge = verbs.add_parser("merge", help="fold a LoRA adapter into its base model")
    merge.add_argument("adapter_dir")
    merge.add_argument("dst")

    push = verbs.add_parser("push", help="push an output folder to the Hub")
    push.add_argument("dir")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision")
    push.add_argument("--commit-message")
    push.add_argument("--include-checkpoints", action="store_true",
                      help="also push checkpoint-N/ with their training state, for train.resume: REPO_ID")

    plan = verbs.add_parser("plan", help="Chinchilla compute-optimal model and data size")
    group = plan.add_mutually_exclusive_group()
    group.add_argument("--compute", type=float, metavar="FLOPS")
    group.add_argument("--gpu-hours", type=float)
    group.add_argument("--params", type=float)
    plan.add_argument("--recipe", type=Path, metavar="RECIPE",
                      help="a pretraining recipe: its length and attention pattern add attention's FLOPs; "
                           "without a budget, its model's size is the budget")
    plan.add_argument("--gpu", default="h100")
    plan.add_argument("--mfu", type=float, default=0.4)

    demo = verbs.add_parser("demo", help="tokenizer -> pretrain -> finetune pretrained and random init -> evaluate, "
                                         "on embedded data")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--budget", default="4m", help="pretraining's wall-clock budget, e.g. 4m, 90s (default: 4m)")
    demo.add_argument("--epochs", type=float, default=3, help="finetuning epochs over the SST-2 slice (default: 3)")
    return parser


def load_recipe_from_args(args, **extra):
    from .recipes import check_machine, load_recipe

    cli = {
        "model": args.model,
        "train_file": args.train_file,
        "validation_file": args.validation_file,
        "output_dir": args.output_dir,
        "max_steps": args.max_steps,
        "seed": args.seed,
        **extra,
    }
    recipe = load_recipe(args.recipe, overrides=args.overrides, smoke=args.smoke, cli_overrides=cli)
    for substitution in check_machine(recipe, where=str(args.recipe)):
        logging.getLogger("hfpipe").warning("train.cpu_substitutes: %s", substitution)
    return recipe


def dispatch(args) -> int:
    """Run the verb. Each branch imports what it runs: ``hfpipe --help`` and a bad recipe stay fast
    (no torch, no transformers loaded for them)."""
    verb = args.verb
    if verb == "tokenizer":
        from .tokenization import train_tokenizer_from_files

        tokenizer = train_tokenizer_from_files(args.files, args.family, args.vocab_size, args.out,
                                               min_frequency=args.min_frequency)
        print(f"saved a {args.family} tokenizer with {len(tokenizer)} entries to {args.out}")
    elif verb == "pretrain":
        from .pretrain import run_pretraining

        run_pretraining(load_recipe_from_args(args))
    elif verb in ("finetune", "evaluate"):
        from .device import resolve_device, trainer_device_options

        if verb == "evaluate":
            resolve_device(args.device)  # a missing accelerator: one line, before any loading
        recipe = load_recipe_from_args(args)
        if verb == "evaluate":
            from .training.output_dir import prepare_evaluation_dir

            prepare_evaluation_dir(recipe, args.output_dir)  # never inside the run it evaluates
        if verb == "evaluate" and recipe.kind == "pretrain":
            from .perplexity import run_perplexity

            run_perplexity(recipe, device=args.device, dtype=args.dtype)
        else:
            from .finetune import run_finetuning

            if verb == "evaluate":
                trainer_device_options(recipe, args.device, args.dtype)
            run_finetuning(recipe, do_train=verb == "finetune")
    elif verb == "icl":
        from .device import resolve_device
        from .icl import run_icl

        resolve_device(args.device)
        recipe = load_recipe_from_args(args, shots=args.shots)
        run_icl(recipe, device=args.device, dtype=args.dtype)
    elif verb == "generate":
        from .generate import run_generate

        run_generate(args)
    elif verb == "probe":
        from .probe import run_probe

        run_probe(args)
    elif verb == "prefs":
        from .prefs import run_prefs

        run_prefs(args)
    elif verb == "convert":
        from .models.convert import convert_checkpoint, export_checkpoint

        name = (export_checkpoint if args.to == "transformers" else convert_checkpoint)(args.src, args.dst)
        print(f"wrote {name} to {args.dst}")
    elif verb == "merge":
        from .adapters import merge_adapter

        merge_adapter(args.adapter_dir, args.dst)
        print(f"merged {args.adapter_dir} into a standalone checkpoint at {args.dst}")
    elif verb == "push":
        from .hub import push_to_hub

        url = push_to_hub(args.dir, args.repo_id, private=args.private, revision=args.revision,
                          commit_message=args.commit_message, include_checkpoints=args.include_checkpoints)
        print(f"pushed {args.dir} to {url}")
    elif verb == "plan":
        from .plan import format_plan, plan, recipe_attention_flops_per_token, recipe_parameter_count
        from .recipes import load_recipe

        params, attention, family = args.params, 0.0, None
        if args.recipe is not None:
            recipe = load_recipe(args.recipe)
            attention = recipe_attention_flops_per_token(recipe)
            family = recipe.model.family
            if args.compute is None and args.gpu_hours is None and params is None:
                params = recipe_parameter_count(recipe)
        result = plan(compute_flops=args.compute, gpu_hours=args.gpu_hours,
                      gpu=args.gpu if args.gpu_hours is not None or args.recipe is not None else None,
                      params=params, mfu=args.mfu, attention_flops=attention, family=family)
        print(format_plan(result))
    elif verb == "demo":
        from .demo import run_demo

        run_demo(args.output_dir, budget=args.budget, epochs=args.epochs)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for message in THIRD_PARTY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    try:
        return dispatch(args)
    except InputError as error:
        print(f"hfpipe: error: {error}", file=sys.stderr)
        return InputError.exit_code
    except NonFiniteLossError as error:  # a diverged run gets one line, not a traceback
        print(f"\nhfpipe: {error}", file=sys.stderr)  # on its own line, after any progress bar
        return 1
    except KeyboardInterrupt:
        print("hfpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
