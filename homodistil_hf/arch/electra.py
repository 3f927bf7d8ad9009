"""ELECTRA adapter (ElectraModel, ForMaskedLM (generator), ForPreTraining (discriminator), ForSequenceClassification,
ForQuestionAnswering, ForTokenClassification).

ELECTRA may embed in a smaller width (`embedding_size`) and project to `hidden_size`. With a projection, the
embedding width is left alone and the hidden channels start at the projection's output rows; without one, the
embeddings carry the hidden channels and `embedding_size` follows `hidden_size`.
"""

from torch import nn

from .base import ArchAdapter, HiddenParts, get_module


class ElectraAdapter(ArchAdapter):
    model_types = ("electra",)
    head_inout_linears = ("discriminator_predictions.dense", "classifier.dense")
    head_in_linears = ("discriminator_predictions.dense_prediction", "classifier.out_proj", "classifier",
                       "qa_outputs")

    @staticmethod
    def _projection(model: nn.Module) -> nn.Linear | None:
        return getattr(model.base_model, "embeddings_project", None)

    def embedding_parts(self, model: nn.Module) -> HiddenParts:
        project = self._projection(model)
        if project is None:
            return super().embedding_parts(model)
        return HiddenParts(out_linears=[project])

    def hidden_parts(self, model: nn.Module) -> HiddenParts:
        parts = super().hidden_parts(model)
        generator = get_module(model, "generator_predictions")
        if generator is not None:
            if self._projection(model) is None:  # generator head works in the (shared) hidden width
                parts.in_linears.append(generator.dense)
                parts.out_linears.append(generator.dense)
                parts.norms.append(generator.LayerNorm)
                parts.in_linears.append(model.generator_lm_head)
            else:  # generator head reads hidden, writes the untouched embedding width
                parts.in_linears.append(generator.dense)
        return parts

    def extra_known_modules(self, model: nn.Module) -> list[nn.Module]:
        if self._projection(model) is None:
            return []
        emb = model.base_model.embeddings
        known = [emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings, emb.LayerNorm]
        if (generator := get_module(model, "generator_predictions")) is not None:
            known += [generator.LayerNorm, model.generator_lm_head]
        return known

    def write_config(self, config, hidden: int, heads: int, intermediate: int) -> None:
        if config.embedding_size == config.hidden_size:
            config.embedding_size = hidden
        super().write_config(config, hidden, heads, intermediate)

    def shape_constraints(self, config, hidden: int, heads: int) -> str | None:
        if config.embedding_size != config.hidden_size and hidden == config.embedding_size:
            return (f"this ELECTRA projects embeddings ({config.embedding_size}) to hidden ({config.hidden_size}); "
                    f"a target hidden size equal to embedding_size would drop that projection from the stock config")
        return None
