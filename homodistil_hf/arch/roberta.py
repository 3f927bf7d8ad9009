"""RoBERTa adapter (RobertaModel, ForMaskedLM, ForSequenceClassification, ForQuestionAnswering,
ForTokenClassification, ForMultipleChoice)."""

from .base import ArchAdapter


class RobertaAdapter(ArchAdapter):
    model_types = ("roberta",)
    head_inout_linears = ("lm_head.dense", "classifier.dense")
    head_in_linears = ("lm_head.decoder", "classifier.out_proj", "classifier", "qa_outputs")
    head_norms = ("lm_head.layer_norm",)
