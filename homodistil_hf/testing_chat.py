"""A tiny byte-level BPE tokenizer with a ChatML chat template, built offline (for tests and examples of
conversational data and of lm-evaluation-harness), and a tiny random Llama saved with it.

The BPE is trained by the `tokenizers` library on a fixed English snippet: ~300 tokens (the 256 byte symbols, the
merges, and `<|endoftext|>` = EOS and pad, `<|im_start|>`, `<|im_end|>`); it encodes any text.
"""

from __future__ import annotations

import os
from pathlib import Path

# ChatML (as in Qwen2), with the assistant's content and end-of-turn token inside {% generation %} markers.
CHATML_GENERATION = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The same rendering without markers (most released templates).
CHATML = CHATML_GENERATION.replace("{% generation %}", "").replace("{% endgeneration %}", "")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_SNIPPET = ("Hello there, how are you? The answer is in the passage. What is the question? user assistant system "
            "The river flows to the sea in the north of the country, and the city was founded in 1850.")


def tiny_chat_tokenizer(chat_template: str | None = CHATML_GENERATION, vocab_size: int = 320):
    """A `PreTrainedTokenizerFast` (byte-level BPE, no BOS, EOS = pad = `<|endoftext|>`) with `chat_template`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([_SNIPPET] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=SPECIAL[0], pad_token=SPECIAL[0],
                                        additional_special_tokens=SPECIAL[1:], model_max_length=128)
    tokenizer.chat_template = chat_template
    return tokenizer


def save_tiny_chat_decoder(path: str | os.PathLike, model_type: str = "llama", chat_template: str | None = None,
                           **overrides) -> Path:
    """A tiny random causal LM (`testing.tiny_decoder`) over `tiny_chat_tokenizer`'s vocabulary, saved with that
    tokenizer to `path` (a folder `from_pretrained` and lm-eval's HFLM load offline)."""
    from .testing import tiny_decoder

    tokenizer = tiny_chat_tokenizer(chat_template or CHATML_GENERATION)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    path = Path(path)
    tiny_decoder(model_type, vocab_size=len(tokenizer), **{**ids, **overrides}).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
