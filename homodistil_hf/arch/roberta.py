"""RoBERTa adapter (RobertaModel, ForMaskedLM, ForSequenceClassification, ForQuestionAnswering,
ForTokenClassification, ForMultipleChoice)."""

from .encoder import EncoderAdapter
from .registry import register_adapter


@register_adapter
class RobertaAdapter(EncoderAdapter):
    model_types = ("roberta",)
    head_inout_linears = ("lm_head.dense", "classifier.dense")
    head_inputs = ("lm_head.decoder", "classifier.out_proj", "classifier", "qa_outputs")
    head_norms = ("lm_head.layer_norm",)
