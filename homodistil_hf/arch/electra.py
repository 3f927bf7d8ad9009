"""ELECTRA adapter (ElectraModel, ForMaskedLM (generator), ForPreTraining (discriminator), ForSequenceClassification,
ForQuestionAnswering, ForTokenClassification).

ELECTRA may embed in a smaller width (`embedding_size`) and project to `hidden_size`. With a projection, the
embedding width is left alone and the hidden channels start at the projection's output rows; without one, the
embeddings carry the hidden channels and `embedding_size` follows `hidden_size`.
"""

from torch import nn

from .base import HiddenParts, get_module
from .encoder import EncoderAdapter
from .registry import register_adapter
from .shape import Shape


@register_adapter
class ElectraAdapter(EncoderAdapter):
    model_types = ("electra",)
    head_inout_linears = ("discriminator_predictions.dense", "classifier.dense")
    head_inputs = ("discriminator_predictions.dense_prediction", "classifier.out_proj", "classifier",
                       "qa_outputs")

    @staticmethod
    def _projection(model: nn.Module) -> nn.Linear | None:
        return getattr(model.base_model, "embeddings_project", None)

    def embedding_parts(self, model: nn.Module) -> HiddenParts:
        project = self._projection(model)
        if project is None:
            return super().embedding_parts(model)
        return HiddenParts(outputs=[project])

    def hidden_parts(self, model: nn.Module) -> HiddenParts:
        parts = super().hidden_parts(model)
        generator = get_module(model, "generator_predictions")
        if generator is not None:
            if self._projection(model) is None:  # generator head works in the (shared) hidden width
                parts.inputs.append(generator.dense)
                parts.outputs.append(generator.dense)
                parts.norms.append(generator.LayerNorm)
                parts.inputs.append(model.generator_lm_head)
            else:  # generator head reads hidden, writes the untouched embedding width
                parts.inputs.append(generator.dense)
        return parts

    def free_modules(self, model: nn.Module) -> list[nn.Module]:
        if self._projection(model) is None:
            return super().free_modules(model)
        emb = model.base_model.embeddings
        known = super().free_modules(model) + [emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings, emb.LayerNorm]
        if (generator := get_module(model, "generator_predictions")) is not None:
            known += [generator.LayerNorm, model.generator_lm_head]
        return known

    def write_config(self, config, shape: Shape) -> None:
        if config.embedding_size == config.hidden_size:
            config.embedding_size = shape.hidden
        super().write_config(config, shape)

    def check_shape(self, config, teacher: Shape, target: Shape) -> str | None:
        if config.embedding_size != config.hidden_size and target.hidden == config.embedding_size:
            return (f"this ELECTRA projects embeddings ({config.embedding_size}) to hidden ({config.hidden_size}); "
                    f"a target hidden size equal to embedding_size would drop that projection from the stock config")
        return None
