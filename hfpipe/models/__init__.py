"""hfpipe's three model families as transformers models.

Importing this package registers every config and model with transformers' Auto classes
and marks each class for ``register_for_auto_class``, so ``save_pretrained`` copies the
modeling files next to the weights and the checkpoint loads with ``trust_remote_code=True``
where hfpipe is not installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration import (
    CONFIG_CLASSES,
    SIZE_PRESETS,
    HfpipeConfig,
    HfpipeDecoderConfig,
    HfpipeEncoderConfig,
    HfpipeSeq2SeqConfig,
    config_for,
)
from .decoder import (
    HfpipeDecoderForCausalLM,
    HfpipeDecoderForQuestionAnswering,
    HfpipeDecoderForSequenceClassification,
    HfpipeDecoderModel,
)
from .encoder import (
    HfpipeEncoderForMaskedLM,
    HfpipeEncoderForPreTraining,
    HfpipeEncoderForQuestionAnswering,
    HfpipeEncoderForSequenceClassification,
    HfpipeEncoderForTokenClassification,
    HfpipeEncoderModel,
)
from .electra import HfpipeElectraForPreTraining, HfpipeEncoderForReplacedTokenDetection
from .seq2seq import HfpipeSeq2SeqForConditionalGeneration, HfpipeSeq2SeqModel

_REGISTRY = {
    HfpipeEncoderConfig: {
        AutoModel: HfpipeEncoderModel,
        AutoModelForPreTraining: HfpipeEncoderForPreTraining,
        AutoModelForMaskedLM: HfpipeEncoderForMaskedLM,
        AutoModelForSequenceClassification: HfpipeEncoderForSequenceClassification,
        AutoModelForTokenClassification: HfpipeEncoderForTokenClassification,
        AutoModelForQuestionAnswering: HfpipeEncoderForQuestionAnswering,
    },
    HfpipeDecoderConfig: {
        AutoModel: HfpipeDecoderModel,
        AutoModelForCausalLM: HfpipeDecoderForCausalLM,
        AutoModelForPreTraining: HfpipeDecoderForCausalLM,
        AutoModelForSequenceClassification: HfpipeDecoderForSequenceClassification,
        AutoModelForQuestionAnswering: HfpipeDecoderForQuestionAnswering,
    },
    HfpipeSeq2SeqConfig: {
        AutoModel: HfpipeSeq2SeqModel,
        AutoModelForSeq2SeqLM: HfpipeSeq2SeqForConditionalGeneration,
        AutoModelForPreTraining: HfpipeSeq2SeqForConditionalGeneration,
    },
}


def _register() -> None:
    for config_class, models in _REGISTRY.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()
        for auto_class, model_class in models.items():
            auto_class.register(config_class, model_class, exist_ok=True)
            # The config's auto_map already lists every Auto class; this only makes
            # save_pretrained copy the modeling files (custom_object_save).
            if getattr(model_class, "_auto_class", None) is None:
                model_class.register_for_auto_class(auto_class.__name__)


_register()

MODEL_CLASSES = {
    "encoder": {"pretraining": HfpipeEncoderForPreTraining, "mlm": HfpipeEncoderForMaskedLM},
    "decoder": {"clm": HfpipeDecoderForCausalLM},
    "seq2seq": {"seq2seq": HfpipeSeq2SeqForConditionalGeneration},
}

__all__ = [
    "CONFIG_CLASSES",
    "SIZE_PRESETS",
    "HfpipeConfig",
    "HfpipeEncoderConfig",
    "HfpipeDecoderConfig",
    "HfpipeSeq2SeqConfig",
    "config_for",
    "HfpipeEncoderModel",
    "HfpipeEncoderForPreTraining",
    "HfpipeEncoderForMaskedLM",
    "HfpipeEncoderForSequenceClassification",
    "HfpipeEncoderForTokenClassification",
    "HfpipeEncoderForQuestionAnswering",
    "HfpipeEncoderForReplacedTokenDetection",
    "HfpipeElectraForPreTraining",
    "HfpipeDecoderModel",
    "HfpipeDecoderForCausalLM",
    "HfpipeDecoderForSequenceClassification",
    "HfpipeDecoderForQuestionAnswering",
    "HfpipeSeq2SeqModel",
    "HfpipeSeq2SeqForConditionalGeneration",
]
