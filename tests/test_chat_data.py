"""Conversational corpora (TRL's `messages` and `prompt`/`completion` layouts): which tokens the LM labels and the
logit distillation mask (`kd_positions`) count, packed and not, against masks built by hand from the token ids of
each piece of the rendered text."""

import json

import pytest
import torch

from homodistil_hf.data import CausalLMCollator, kd_positions, load_raw, pack_blocks
from homodistil_hf.errors import UserError
from homodistil_hf.testing_chat import CHATML, CHATML_GENERATION, tiny_chat_tokenizer

TEXT = ["The river flows to the sea.", "The city was founded in 1850, in the north.", "How are you?"]
CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}],
    [{"role": "system", "content": "Answer from the passage."}, {"role": "user", "content": "What is the river?"},
     {"role": "assistant", "content": "The sea"}, {"role": "user", "content": "And the city?"},
     {"role": "assistant", "content": "1850"}],
    [{"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "The answer is in the passage."}],
]
PAIRS = [("Question: What is the river?\nAnswer:", " The sea"), ("Hello", " there, how are you?"),
         ("What is the question?", " The city was founded in 1850.")]


def turn(role, content, target):
    """The pieces ChatML renders for one message: (text, whether the assistant-only loss counts it)."""
    return [(f"<|im_start|>{role}\n", False), (content + "<|im_end|>", target), ("\n", False)]


def hand(tokenizer, pieces):
    """Token ids and labels of `pieces` [(text, counted)], each piece encoded on its own (no special tokens)."""
    ids, labels = [], []
    for text, counted in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if counted else [-100] * len(piece)
    return ids, labels


def expected_kd(labels):
    return [[labels[r][t + 1] != -100 if t + 1 < len(labels[r]) else False for t in range(len(labels[r]))]
            for r in range(len(labels))]


def collate(tokenizer, blocks, max_length=None):
    return CausalLMCollator(tokenizer, max_length=max_length)([blocks[i] for i in range(len(blocks))])


def check(tokenizer, raw_file, docs, packing, max_len, **flags):
    """Run load_raw + pack_blocks + the collator on `raw_file`; compare with the hand-made `docs` [(ids, labels)]."""
    raw = load_raw(train_file=str(raw_file))
    blocks = pack_blocks(raw, tokenizer, max_len, packing=packing, **flags)["train"]
    batch = collate(tokenizer, blocks, None if packing else max_len)
    if packing:  # the documents' tokens end to end, cut into rows, the tail dropped
        ids = [t for d in docs for t in d[0]]
        labels = [t for d in docs for t in d[1]]
        rows = len(ids) // max_len
        want_ids = [ids[r * max_len:(r + 1) * max_len] for r in range(rows)]
        want_labels = [labels[r * max_len:(r + 1) * max_len] for r in range(rows)]
    else:  # one row a document, truncated, padded with -100 labels
        want_ids = [(d[0] + [tokenizer.pad_token_id] * max_len)[:max_len] for d in docs]
        want_labels = [(d[1] + [-100] * max_len)[:max_len] for d in docs]
    assert batch["input_ids"].tolist() == want_ids
    assert batch["labels"].tolist() == want_labels
    assert kd_positions(batch["labels"]).tolist() == expected_kd(want_labels)
    if not packing:
        lengths = [min(len(d[0]), max_len) for d in docs]
        assert batch["attention_mask"].sum(1).tolist() == lengths
    return batch


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_kd_positions_by_hand():
    labels = torch.tensor([[5, -100, 7, 8], [-100, -100, 3, -100], [1, 2, 3, 4]])
    assert kd_positions(labels).tolist() == [[False, True, True, False], [False, True, False, False],
                                             [True, True, True, False]]
    assert kd_positions(labels).dtype == torch.bool


@pytest.mark.parametrize("packing", [True, False])
def test_text(tmp_path, packing):
    tokenizer = tiny_chat_tokenizer()
    docs = [hand(tokenizer, [(line, True)]) for line in TEXT]
    max_len = 8 if packing else 10
    batch = check(tokenizer, write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXT]), docs, packing, max_len)
    if packing:  # no mask at a document boundary: the first token of document 2 is the target of document 1's last
        boundary = len(docs[0][0])
        row, col = divmod(boundary - 1, max_len)
        assert col + 1 < max_len and kd_positions(batch["labels"])[row, col]
    assert "labels" not in pack_blocks(load_raw(train_file=str(tmp_path / "c.jsonl")), tokenizer, 8)["train"].column_names


@pytest.mark.parametrize("template", [CHATML_GENERATION, CHATML], ids=["generation_markers", "prefix_diff"])
@pytest.mark.parametrize("packing", [True, False])
def test_messages_assistant_only(tmp_path, template, packing):
    tokenizer = tiny_chat_tokenizer(template)
    docs = [hand(tokenizer, [p for m in conv for p in turn(m["role"], m["content"], m["role"] == "assistant")])
            for conv in CONVERSATIONS]
    raw = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS])
    max_len = 16 if packing else 24
    batch = check(tokenizer, raw, docs, packing, max_len, assistant_only_loss=True)
    # Every counted position predicts an assistant token; each assistant message's tokens are counted.
    assert (batch["labels"] != -100).sum() > 0
    if packing:  # a document boundary inside a row: the next document starts with <|im_start|>, never a target
        starts = torch.nonzero(batch["input_ids"][:, 1:] == tokenizer.convert_tokens_to_ids("<|im_start|>"))
        assert not kd_positions(batch["labels"])[starts[:, 0], starts[:, 1]].any()


@pytest.mark.parametrize("packing", [True, False])
def test_messages_without_mask_counts_every_token(tmp_path, packing):
    tokenizer = tiny_chat_tokenizer(CHATML)
    docs = [hand(tokenizer, [p for m in conv for p in turn(m["role"], m["content"], True)]) for conv in CONVERSATIONS]
    docs = [(ids, ids) for ids, _ in docs]
    check(tokenizer, write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS]), docs, packing,
          16)


@pytest.mark.parametrize("packing", [True, False])
def test_prompt_completion_strings(tmp_path, packing):
    tokenizer = tiny_chat_tokenizer()
    docs = [hand(tokenizer, [(p, False), (c, True), (tokenizer.eos_token, True)]) for p, c in PAIRS]
    raw = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS])
    check(tokenizer, raw, docs, packing, 12, completion_only_loss=True)


@pytest.mark.parametrize("template", [CHATML_GENERATION, CHATML], ids=["generation_markers", "prefix_diff"])
@pytest.mark.parametrize("packing", [True, False])
def test_prompt_completion_conversational(tmp_path, template, packing):
    tokenizer = tiny_chat_tokenizer(template)
    rows = [{"prompt": c[:-1], "completion": c[-1:]} for c in CONVERSATIONS]
    # The completion is the last assistant message (its content and end-of-turn token).
    docs = [hand(tokenizer, [p for i, m in enumerate(c) for p in turn(m["role"], m["content"], i == len(c) - 1)])
            for c in CONVERSATIONS]
    check(tokenizer, write_jsonl(tmp_path / "pc.jsonl", rows), docs, packing, 16, completion_only_loss=True)
    # Both masks: their intersection, the completion (earlier assistant turns are in the prompt).
    both = pack_blocks(load_raw(train_file=str(tmp_path / "pc.jsonl")), tokenizer, 512, packing=False,
                       completion_only_loss=True, assistant_only_loss=True)["train"]
    assert [b["labels"] for b in both] == [d[1] for d in docs]


def test_errors(tmp_path):
    chat = load_raw(train_file=str(write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS])))
    text = load_raw(train_file=str(write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in TEXT])))
    with pytest.raises(UserError, match="'messages' column is conversational but the tokenizer has no chat template"):
        pack_blocks(chat, tiny_chat_tokenizer(None), 16)
    with pytest.raises(UserError, match="--assistant_only_loss needs conversational data"):
        pack_blocks(text, tiny_chat_tokenizer(), 16, assistant_only_loss=True)
    with pytest.raises(UserError, match="--completion_only_loss needs 'prompt' and 'completion'"):
        pack_blocks(chat, tiny_chat_tokenizer(), 16, completion_only_loss=True)
    # A template that drops earlier assistant turns (as reasoning templates do) has no stable prefixes.
    dropping = CHATML.replace("message['content'] + '<|im_end|>' }}{% else %}",
                              "(message['content'] if loop.last else '') + '<|im_end|>' }}{% else %}")
    assert dropping != CHATML
    with pytest.raises(UserError, match="add the markers"):
        pack_blocks(chat, tiny_chat_tokenizer(dropping), 16, assistant_only_loss=True)


# SmolLM2-135M-Instruct's chat template, verbatim (from its GGUF): ChatML with a default system prompt, no markers.
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
           "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
           "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_real_template_prefix_diff(tmp_path):
    """A released template without markers (SmolLM2's, which adds a system prompt): the prefix diff finds the
    assistant turns, their content and end-of-turn token."""
    tokenizer = tiny_chat_tokenizer(SMOLLM2)
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    docs = []
    for conv in CONVERSATIONS:
        pieces = [] if conv[0]["role"] == "system" else turn("system", system, False)
        docs.append(hand(tokenizer, pieces + [p for m in conv for p in turn(m["role"], m["content"],
                                                                             m["role"] == "assistant")]))
    raw = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS])
    check(tokenizer, raw, docs, False, 64, assistant_only_loss=True)


def test_squad_to_messages_example(tmp_path):
    """examples/squad_to_messages.py on a two-article SQuAD-format file: the held-out article becomes the
    validation file and the MC task, and the assistant-only labels of the training rows are the answers."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "squad_to_messages.py"
    spec = importlib.util.spec_from_file_location("squad_to_messages", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    qas = [("Where does the river flow?", "to the sea"), ("When was the city founded?", "in 1850"),
           ("What is in the north?", "the city"), ("How are you?", "there")]
    data = {"data": [{"title": f"A{a}", "paragraphs": [{"context": "The river flows to the sea, in the north.",
                                                         "qas": [{"id": f"{a}{i}", "question": q,
                                                                  "answers": [{"text": ans, "answer_start": 0}]}
                                                                 for i, (q, ans) in enumerate(qas)]}]}
                     for a in range(2)]}
    (tmp_path / "squad.json").write_text(json.dumps(data))
    counts = module.main([str(tmp_path / "squad.json"), str(tmp_path / "out"), "--holdout_articles", "1",
                          "--mc_task_dir", str(tmp_path / "tasks")])
    assert counts == {"train": 4, "validation": 4, "mc_examples": 4}
    tokenizer = tiny_chat_tokenizer(CHATML)
    rows = pack_blocks(load_raw(train_file=str(tmp_path / "out" / "train.jsonl")), tokenizer, 256, packing=False,
                       assistant_only_loss=True)["train"]
    answers = [tokenizer.decode([t for t in r["labels"] if t != -100]) for r in rows]
    assert answers == [f"{a}<|im_end|>" for _, a in qas]
    assert (tmp_path / "tasks" / "squad_mc_holdout.yaml").is_file()
    with pytest.raises(UserError, match="--holdout_articles 2: pass 1 to 1"):
        module.main([str(tmp_path / "squad.json"), str(tmp_path / "out"), "--holdout_articles", "2"])
