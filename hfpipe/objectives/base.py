"""What an objective is to hfpipe: a recipe section that knows its model, its examples and its metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from hfpipe.errors import InputError
from hfpipe.recipes.schema import OBJECTIVES, ObjectiveSection

logger = logging.getLogger("hfpipe.pretrain")

register = OBJECTIVES.register  # class decorator: objective.name -> this section


@dataclass
class Examples:
    """What an objective hands the Trainer."""

    train: Any
    validation: Any | None
    collator: Callable
    compute_metrics: Callable | None = None
    preprocess_logits_for_metrics: Callable | None = None
    counters: dict[str, Any] = field(default_factory=dict)  # streamed: counts kept as the stream is read


@dataclass
class Objective(ObjectiveSection):
    """A pretraining objective. Subclasses set ``family`` and ``auto_class``, declare ``name`` as a
    Literal of their own name and their keys as fields, and write :meth:`examples`; the other hooks
    have the defaults most objectives want."""

    auto_class: ClassVar[str]  # the transformers Auto class of its model, by name (loaded only when training)
    hub_task: ClassVar[str | None] = None  # the model card's task; None: the one transformers infers

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        """Training (and validation) examples from the tokenized-to-be corpus, with their collator."""
        raise NotImplementedError(f"objective {self.name}: examples()")

    def add_tokens(self, tokenizer) -> int:
        """Tokens the objective adds to the tokenizer before the model is sized (UL2's); how many."""
        return 0

    def build_model(self, recipe, tokenizer, added_tokens: int = 0):
        """A new model sized from ``len(tokenizer)``, or the recipe's checkpoint through the Auto class.
        ``added_tokens``: this objective's own new tokens, for which a checkpoint gets embedding rows."""
        import transformers

        from hfpipe.build import new_model_config

        auto_class = getattr(transformers, self.auto_class)
        if recipe.model.name_or_path:
            from hfpipe.build import check_checkpoint_config_keys
            from hfpipe.hub import parse_model_reference

            name, revision = parse_model_reference(recipe.model.name_or_path)
            remote = recipe.model.trust_remote_code
            config = transformers.AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=remote)
            check_checkpoint_config_keys(recipe, config)
            config.update(recipe.model.config)  # overrides apply to a checkpoint too (e.g. no dropout while pretraining)
            model = auto_class.from_pretrained(name, revision=revision, trust_remote_code=remote, config=config)
        else:
            model = auto_class.from_config(new_model_config(recipe, tokenizer, self.max_seq_length))
        embeddings = model.get_input_embeddings().weight.shape[0]
        if embeddings < len(tokenizer) <= embeddings + added_tokens:  # only the objective's own tokens are new
            logger.info("%d tokens added for %s: embedding %d -> %d rows", added_tokens, self.name, embeddings,
                        len(tokenizer))
            model.resize_token_embeddings(len(tokenizer))
            embeddings = len(tokenizer)
        if len(tokenizer) > embeddings:
            raise InputError(
                f"tokenizer {recipe.tokenizer.name_or_path or '(trained)'} has {len(tokenizer)} entries but the "
                f"embedding of model {recipe.model.name_or_path or '(new)'} has {embeddings} rows; "
                "use the model's own tokenizer or a matching tokenizer.name_or_path"
            )
        return model

    def trainer_class(self):
        from hfpipe.training.trainer import HfpipeTrainer

        return HfpipeTrainer

    def final_metrics(self, metrics: dict) -> dict:
        """The last evaluation's metrics as the run reports them (perplexity added)."""
        from hfpipe.training.results import add_perplexity

        return add_perplexity(metrics)
