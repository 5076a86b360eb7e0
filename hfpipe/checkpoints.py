"""Loading a checkpoint for any verb: a model folder, a PEFT adapter folder, or a Hub id.

    check_checkpoint("runs/bert")                       # one InputError line for a file, a truncated
                                                        # safetensors, an adapter without its base
    model = load_model(AutoModelForSequenceClassification, "runs/bert", num_labels=2)

An adapter folder (``adapter_config.json`` beside hfpipe's saved config, no full weights) loads on
its base as peft's AutoPeftModel does, so it works wherever a model folder does. Loading a
pretraining checkpoint into a task head says in one line which heads were dropped and which were
initialised; transformers' LOAD REPORT table is kept for what would be a surprise (backbone weights
missing, shapes that differ).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from .errors import InputError

logger = logging.getLogger("hfpipe.checkpoints")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def _local(name: str) -> Path | None:
    path = Path(name).expanduser()
    return path if path.exists() else None


def is_adapter_folder(name: str) -> bool:
    path = _local(name)
    return (path is not None and path.is_dir() and (path / "adapter_config.json").is_file()
            and not any((path / weights).is_file() for weights in WEIGHT_FILES))


def adapter_base(folder: str) -> str:
    """The base checkpoint an adapter folder was trained on (``base_model_name_or_path``)."""
    config_path = Path(folder) / "adapter_config.json"
    try:
        base = json.loads(config_path.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as error:
        raise InputError(f"{config_path}: not readable as JSON ({error})") from error
    if not base:
        raise InputError(f"{config_path}: no base_model_name_or_path; expected the adapter's base checkpoint")
    return base


def holder_of(name: str, filename: str) -> str:
    """Where ``filename`` (config.json, tokenizer_config.json) of checkpoint ``name`` is read from: the
    folder itself, or for an adapter folder without it (peft's own layout), the adapter's base."""
    if is_adapter_folder(name) and not (Path(name) / filename).is_file():
        return adapter_base(name)
    return name


def check_checkpoint(name: str) -> None:
    """One line, before any weight loads, for a local checkpoint that cannot load; Hub ids pass."""
    path = _local(name)
    if path is None:
        return
    if path.is_file():
        raise InputError(f"{name}: a file; expected a checkpoint folder (config.json and model.safetensors, "
                         "as save_pretrained writes) or a Hub id")
    from safetensors import SafetensorError, safe_open

    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):  # reads and checks the header only
                pass
        except (SafetensorError, OSError) as error:
            raise InputError(f"{weights}: not a readable safetensors file ({error}); "
                             "it may be truncated: save or download it again") from error
    if is_adapter_folder(name):
        base = adapter_base(name)
        if Path(base).is_absolute() or base.startswith("."):
            if not Path(base).expanduser().is_dir():
                raise InputError(f"{Path(name) / 'adapter_config.json'}: base_model_name_or_path {base!r} is not "
                                 "a folder here; expected the checkpoint the adapter was trained on")
        if base != name:
            check_checkpoint(base)


@contextlib.contextmanager
def hub_errors_as_input_errors(name: str):
    """A Hub id that cannot be fetched (offline, no network, no such repo) is one line, not a traceback."""
    try:
        yield
    except OSError as error:
        if _local(name) is not None:
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{name}: cannot be loaded from the Hub ({first}); give a local checkpoint folder "
                         "(--model DIR)") from None


class _HeldLoadReport(logging.Filter):
    """Holds transformers' LOAD REPORT back: shown only if the load then fails (it explains why)."""

    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.held.append(record)
            return False
        return True


def load_model(auto_class, name: str, revision: str | None = None, **kwargs):
    """``auto_class.from_pretrained(name)`` for a model folder or Hub id; for an adapter folder, its base
    with the adapter on top (a ``PeftModel``). Says in one line what a task head dropped and added."""
    check_checkpoint(name)
    if is_adapter_folder(name):
        from peft import PeftModel
        from transformers import AutoConfig

        base_name = adapter_base(name)
        # hfpipe saves the finetuned base config (labels, vocabulary) beside the adapter
        if (Path(name) / "config.json").is_file() and "config" not in kwargs:
            config = AutoConfig.from_pretrained(name, trust_remote_code=kwargs.get("trust_remote_code", False))
            for key in [key for key in kwargs if key == "num_labels" or hasattr(config, key)]:
                setattr(config, key, kwargs.pop(key))  # config fields go into the config, not the model
            kwargs["config"] = config
        base = load_model(auto_class, base_name, **kwargs)
        if len(base.get_input_embeddings().weight) != base.config.vocab_size:
            base.resize_token_embeddings(base.config.vocab_size)
        logger.info("%s: a %s adapter on %s", name, json.loads((Path(name) / "adapter_config.json").read_text())
                    .get("peft_type", "PEFT"), base_name)
        return PeftModel.from_pretrained(base, name)
    transformers_logger = logging.getLogger("transformers.modeling_utils")
    report = _HeldLoadReport()
    transformers_logger.addFilter(report)
    try:
        with hub_errors_as_input_errors(name):
            model, info = auto_class.from_pretrained(name, revision=revision, output_loading_info=True, **kwargs)
    except Exception:
        transformers_logger.removeFilter(report)
        for record in report.held:
            transformers_logger.handle(record)
        raise
    transformers_logger.removeFilter(report)
    report_loading(model, name, info)
    return model


def _modules(keys) -> list[str]:
    """Top-level module names of state-dict keys (``mlm_head.dense.weight`` -> ``mlm_head``)."""
    return sorted({key.split(".")[0] for key in keys})


def _tensors(keys) -> str:
    return f"{len(keys)} tensor{'s' if len(keys) != 1 else ''}"


def report_loading(model, name: str, info: dict) -> None:
    """One line for the expected case (pretraining heads dropped, a new head initialised); transformers'
    full detail for anything else."""
    missing, unexpected = set(info.get("missing_keys", ())), set(info.get("unexpected_keys", ()))
    mismatched = info.get("mismatched_keys", ())
    backbone = f"{model.base_model_prefix}."
    missing_backbone = sorted(key for key in missing if key.startswith(backbone))
    if missing_backbone or mismatched:
        detail = ", ".join(missing_backbone[:5]) + (" ..." if len(missing_backbone) > 5 else "")
        shapes = ", ".join(f"{key} {tuple(old)} -> {tuple(new)}" for key, old, new in list(mismatched)[:3])
        logger.warning("%s: %s%s of %s start from random weights%s", name, detail,
                       f"{'; ' if detail and shapes else ''}{shapes}", type(model).__name__,
                       f" ({len(missing_backbone)} backbone tensors missing)" if missing_backbone else "")
        return
    parts = []
    if unexpected:
        parts.append(f"dropped {', '.join(_modules(unexpected))} ({_tensors(unexpected)}, not part of "
                     f"{type(model).__name__})")
    if missing:
        parts.append(f"initialised {', '.join(_modules(missing))} ({_tensors(missing)}) afresh")
    if parts:
        logger.info("%s: loaded the backbone; %s", name, "; ".join(parts))


def merged(model, name: str):
    """A LoRA-family adapter folded into its base (a plain model again); other adapters cannot fold."""
    try:
        return model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError) as error:
        raise InputError(f"{name}: a {model.peft_config['default'].peft_type} adapter cannot be folded into its "
                         "base to train further; finetune its base checkpoint instead") from error
