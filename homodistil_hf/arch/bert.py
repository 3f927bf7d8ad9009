"""BERT adapter (BertModel, ForMaskedLM, ForPreTraining, ForSequenceClassification, ForQuestionAnswering,
ForTokenClassification, ForMultipleChoice, ForNextSentencePrediction)."""

from .encoder import EncoderAdapter
from .registry import register_adapter


@register_adapter
class BertAdapter(EncoderAdapter):
    model_types = ("bert",)
    head_inout_linears = ("cls.predictions.transform.dense",)
    # The MLM decoder's weight is tied to the word embeddings: sliced once, its in_features updated.
    head_inputs = ("cls.predictions.decoder", "cls.seq_relationship", "classifier", "qa_outputs")
    head_norms = ("cls.predictions.transform.LayerNorm",)
