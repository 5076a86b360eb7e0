"""``hfpipe generate MODEL --prompt TEXT``: decoding with transformers' ``generate``.

Decoders and encoder-decoders, hfpipe or transformers checkpoints. Greedy when temperature is
0 (or no sampling option is given); sampling with temperature / top-k / top-p; beam search;
repetition penalty. Tokens stream to the terminal for a single prompt; several prompts (repeated
--prompt or --prompt-file, one per line) run as one left-padded batch. ``--chat`` sends each
prompt as a user turn through the tokenizer's chat template, as instruction tuning
(``task.name: sft``) trained the model. ``--device`` (default: the best accelerator) and
``--dtype`` (default: the precision the checkpoint's run trained in, float32 on CPU) choose where
and how the model runs; see hfpipe/device.py.
"""

from __future__ import annotations

import sys

from .decoding import check_prompts_fit, generate, generation_kwargs, load_generator
from .device import resolve_device
from .errors import InputError


def run_generate(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                prompts += [line.rstrip("\n") for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"--prompt-file {args.prompt_file}: {error}") from error
    if not prompts:
        raise InputError("give --prompt TEXT (repeatable) or --prompt-file FILE")
    kwargs = generation_kwargs(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.num_beams,
                               args.repetition_penalty, args.do_sample)
    device = resolve_device(getattr(args, "device", "auto"))  # before loading: a missing GPU is one line
    model, tokenizer = load_generator(args.model, device=device, dtype=getattr(args, "dtype", "auto"))
    check_prompts_fit(model, tokenizer, prompts, args.max_new_tokens, "--prompt-file " + args.prompt_file
                      if args.prompt_file else "--prompt", chat=args.chat)
    stream = len(prompts) == 1 and args.num_beams == 1 and not args.no_stream
    if stream:
        print(prompts[0] + ("\n" if args.chat else ""), end="", flush=True)
    texts = generate(model, tokenizer, prompts, seed=args.seed, stream=stream, chat=args.chat, **kwargs)
    if not stream:
        separator = "\n" + "-" * 40 + "\n" if len(prompts) > 1 else "\n"
        echo_prompt = not model.config.is_encoder_decoder  # a decoder's output continues its prompt
        shown = [(p + ("\n" if args.chat else "") if echo_prompt else "") + t for p, t in zip(prompts, texts)]
        sys.stdout.write(separator.join(shown) + "\n")
    return texts
