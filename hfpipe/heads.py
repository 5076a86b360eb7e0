"""The model heads hfpipe knows, by the class-name suffix transformers gives each, in one table:
which Auto class loads it, its Hub pipeline tag, and its peft task type.

    head_for("BertForSequenceClassification").auto_class   # "AutoModelForSequenceClassification"
    head_for_peft_task("CAUSAL_LM").pipeline_tag            # "text-generation"
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Head:
    suffix: str  # end of the architecture's class name
    auto_class: str  # the transformers Auto class that loads it (and its hfpipe twin)
    pipeline_tag: str  # the Hub's task for it (model cards)
    peft_task: str | None  # peft's TaskType name, where peft has one


# Longer suffixes first where one ends another ("Model" ends everything).
HEADS = (
    Head("ForPreTraining", "AutoModelForPreTraining", "fill-mask", None),
    Head("ForMaskedLM", "AutoModelForMaskedLM", "fill-mask", None),
    Head("LMHeadModel", "AutoModelForCausalLM", "text-generation", "CAUSAL_LM"),
    Head("ForCausalLM", "AutoModelForCausalLM", "text-generation", "CAUSAL_LM"),
    Head("ForConditionalGeneration", "AutoModelForSeq2SeqLM", "text2text-generation", "SEQ_2_SEQ_LM"),
    Head("ForSeq2SeqLM", "AutoModelForSeq2SeqLM", "text2text-generation", "SEQ_2_SEQ_LM"),
    Head("ForSequenceClassification", "AutoModelForSequenceClassification", "text-classification", "SEQ_CLS"),
    Head("ForTokenClassification", "AutoModelForTokenClassification", "token-classification", "TOKEN_CLS"),
    Head("ForQuestionAnswering", "AutoModelForQuestionAnswering", "question-answering", "QUESTION_ANS"),
    Head("Model", "AutoModel", "feature-extraction", "FEATURE_EXTRACTION"),
)


def head_for(class_name: str) -> Head | None:
    """The head of a model class (or config ``architectures`` entry) by its name; None if unknown."""
    return next((head for head in HEADS if class_name.endswith(head.suffix)), None)


def head_for_peft_task(task_type: str | None) -> Head | None:
    """The head a peft adapter of ``task_type`` (adapter_config.json) sits on; None if unknown."""
    return next((head for head in HEADS if task_type and head.peft_task == task_type), None)
