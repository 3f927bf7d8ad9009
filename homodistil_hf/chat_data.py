"""Conversational and prompt-completion corpora, with TRL's dataset conventions (`SFTTrainer`).

Three layouts, told apart by the columns (`detect_layout`):

- text: any other corpus (a `text` column, or the first column) - tokenised as before, every token a target;
- messages: a `messages` column, each row a list of {"role", "content"} dicts, rendered with the tokenizer's chat
  template (`tokenizer.apply_chat_template`);
- prompt_completion: `prompt` and `completion` columns, either strings (concatenated, the completion ended with the
  EOS token as TRL does) or conversational lists (prompt messages, then completion messages, rendered together).

`encode_example` turns one row into `input_ids`, `attention_mask` and `labels`: the token ids, or -100 where no loss
is wanted. `assistant_only_loss` keeps only the assistant's tokens; `completion_only_loss` only the completion's.

How assistant tokens are found: a chat template with `{% generation %}` markers gives them directly
(`apply_chat_template(..., return_assistant_tokens_mask=True)`, as TRL does). Without markers, the conversation is
rendered prefix by prefix: the text an assistant message adds is `render(messages[:i + 1])` minus
`render(messages[:i], add_generation_prompt=True)` (its content and end-of-turn token; whitespace the template
puts after the end-of-turn token is left out, since generation stops before it), and the tokens of the full
rendering whose characters overlap that span (the fast tokenizer's offsets) are the assistant's. A template whose
earlier turns render differently once later turns follow (e.g. one that drops past reasoning) has no such prefixes:
that is a `UserError` asking for `{% generation %}` markers. The completion of a prompt-completion row is found
the same way (text after the rendered prompt with its generation prompt, trailing whitespace left out; or
after the prompt string, up to the EOS token appended).
"""

from __future__ import annotations

import re

from .errors import UserError

LAYOUTS = ("text", "messages", "prompt_completion")
_GENERATION = re.compile(r"{%-?\s*generation\s*-?%}")


def detect_layout(columns) -> str:
    """'messages' with a `messages` column, 'prompt_completion' with `prompt` and `completion`, else 'text'.
    `columns`: the dataset's column names (None, as for some streamed datasets, means text)."""
    columns = set(columns or [])
    if "messages" in columns:
        return "messages"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    return "text"


def check_layout(layout: str, tokenizer, assistant_only_loss: bool = False, completion_only_loss: bool = False,
                 conversational: bool = True) -> None:
    """`UserError` for a loss mask the layout cannot have, or conversational data with no way to render it.
    `conversational`: whether prompt/completion rows are message lists (not strings)."""
    if assistant_only_loss and not (layout == "messages" or (layout == "prompt_completion" and conversational)):
        raise UserError(f"--assistant_only_loss needs conversational data (a 'messages' column, or 'prompt'/"
                        f"'completion' message lists); this corpus is {layout}: drop the flag")
    if completion_only_loss and layout != "prompt_completion":
        raise UserError(f"--completion_only_loss needs 'prompt' and 'completion' columns; this corpus is {layout}: "
                        "drop the flag or use --assistant_only_loss with a 'messages' column")
    column = "messages" if layout == "messages" else "prompt/completion"
    if layout != "text" and conversational and getattr(tokenizer, "chat_template", None) is None:
        raise UserError(f"the corpus's {column!r} column is conversational but the tokenizer has no chat template: "
                        "pass the instruct model's tokenizer (--tokenizer_name) or one with a chat_template")
    if (assistant_only_loss or completion_only_loss) and not getattr(tokenizer, "is_fast", False):
        raise UserError("--assistant_only_loss / --completion_only_loss need a fast tokenizer (character offsets): "
                        "pass one with a tokenizer.json (--tokenizer_name)")


def encode_example(example: dict, tokenizer, layout: str, assistant_only_loss: bool = False,
                   completion_only_loss: bool = False) -> dict:
    """One row of a messages or prompt_completion corpus as `input_ids`, `attention_mask` (all 1) and `labels`
    (the ids, -100 where the loss masks exclude a token), lists of equal length, not truncated."""
    masked = assistant_only_loss or completion_only_loss
    if layout == "prompt_completion" and isinstance(example["prompt"], str):
        prompt, completion = example["prompt"], example["completion"]
        eos = tokenizer.eos_token or ""
        text = prompt + completion + (eos if not completion.endswith(eos) else "")
        enc = tokenizer(text, return_offsets_mapping=masked)  # special tokens (BOS) as for plain text
        keep = [_token_mask(enc["offset_mapping"], [(len(prompt), len(text))])] if completion_only_loss else []
    else:
        messages = example["messages"] if layout == "messages" else [*example["prompt"], *example["completion"]]
        messages = [_clean(m) for m in messages]
        text = _render(tokenizer, messages)
        # The template writes its special tokens (BOS included) itself, as apply_chat_template(tokenize=True) does.
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=masked)
        keep = []
        if assistant_only_loss:
            keep.append(_assistant_mask(tokenizer, messages, text, enc))
        if completion_only_loss:
            prefix = _render(tokenizer, [_clean(m) for m in example["prompt"]], add_generation_prompt=True)
            if not text.startswith(prefix):
                raise UserError("--completion_only_loss: the chat template renders the prompt differently once the "
                                "completion follows, so the completion cannot be located; drop the flag")
            keep.append(_token_mask(enc["offset_mapping"], [(len(prefix), len(text.rstrip()))]))
    ids = list(enc["input_ids"])
    labels = [t if all(k[j] for k in keep) else -100 for j, t in enumerate(ids)]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def _clean(message: dict) -> dict:
    """A message without the keys `datasets` fills with None (a JSON file whose rows have different keys)."""
    return {k: v for k, v in message.items() if v is not None}


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # jinja2 raises TemplateError (e.g. "roles must alternate") and others
        raise UserError(f"the chat template cannot render a conversation of the corpus ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200]}); fix the data or the template") from None


def _assistant_mask(tokenizer, messages: list[dict], text: str, enc) -> list[int]:
    """1 on the assistant's tokens of `enc` (the tokenised rendering `text` of `messages`), else 0."""
    if _GENERATION.search(tokenizer.chat_template or ""):
        out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
        if list(out["input_ids"]) != list(enc["input_ids"]):
            raise UserError("--assistant_only_loss: the chat template tokenises differently than its rendering; "
                            "report this with the model name")
        return list(out["assistant_masks"])
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[:i + 1])
        if not (upto.startswith(before) and text.startswith(upto)):
            raise UserError("--assistant_only_loss: the chat template renders earlier turns differently once later "
                            "turns follow and has no {% generation %} markers; add the markers to the template")
        spans.append((len(before), len(upto.rstrip())))
    return _token_mask(enc["offset_mapping"], spans)


def _token_mask(offsets, spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters [start, end) overlap a span [a, b), else 0 (empty tokens: 0)."""
    return [int(any(s < b and e > a for a, b in spans) and e > s) for s, e in offsets]
