"""Target validation, the parameter-count search, and the width schedules."""

import pytest
from transformers import BertConfig

from homodistil_hf.arch import Shape
from homodistil_hf.config import HomoDistilConfig, parse_param_count, resolve_step
from homodistil_hf.errors import UserError
from homodistil_hf.pruning.schedule import WidthSchedule
from homodistil_hf.pruning.targets import (
    check_target,
    config_for_shape,
    count_backbone_params,
    resolve_target,
    shape_for_params,
)
from homodistil_hf.testing import tiny_config

MINILM = BertConfig(hidden_size=384, num_attention_heads=12, intermediate_size=1536, num_hidden_layers=6)


def test_valid_target_and_head_size():
    assert check_target(MINILM, 192, 6, 768) == Shape(192, 6, 32, 768)
    assert check_target(MINILM, 192, 8, 768).head_dim == 24  # head dims pruned too


@pytest.mark.parametrize(
    "hidden, heads, ffn, message",
    [
        (192, 5, 768, "valid head counts for hidden 192: 6, 8, 12"),  # does not divide
        (192, 4, 768, "larger than the teacher's 32"),  # head size would grow
        (500, 12, 768, "larger than the teacher's 384"),
        (192, 13, 768, "--target_num_attention_heads 13 is larger"),
        (192, 6, 2000, "--target_intermediate_size 2000 is larger"),
    ],
)
def test_invalid_targets_name_valid_choices(hidden, heads, ffn, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        check_target(MINILM, hidden, heads, ffn)


def test_electra_projection_constraint():
    cfg = tiny_config("electra", embedding_size=32)
    with pytest.raises(UserError, match="embedding_size"):
        check_target(cfg, 32, 2, 64)
    assert check_target(cfg, 48, 3, 64).hidden == 48


def test_param_count_is_exact_for_bert_base():
    assert count_backbone_params(BertConfig()) == 109_482_240  # BERT-base with pooler, the usual "110M"


@pytest.mark.parametrize("target", [65e6, 17.3e6, 15.6e6, 14.1e6])
def test_paper_targets_resolve_to_stock_shapes_close_to_the_count(target):
    shape = shape_for_params(BertConfig(), int(target))
    assert shape.hidden % shape.heads == 0 and shape.head_dim <= 64
    count = count_backbone_params(config_for_shape(BertConfig(), shape))
    assert abs(count - target) / target < 0.03


def test_param_count_parsing():
    assert parse_param_count("17.3M") == 17_300_000
    assert parse_param_count("1.2b") == 1_200_000_000
    assert parse_param_count("14100000") == 14_100_000
    with pytest.raises(UserError):
        parse_param_count("lots")


def test_resolve_target_defaults_and_conflicts(tmp_path):
    args = HomoDistilConfig(output_dir=str(tmp_path), target_hidden_size=192)
    assert resolve_target(MINILM, args) == Shape(192, 6, 32, 1536)  # heads follow the head size
    assert resolve_target(MINILM, HomoDistilConfig(output_dir=str(tmp_path))) is None
    with pytest.raises(UserError, match="drop"):
        HomoDistilConfig(output_dir=str(tmp_path), target_params="10M", target_hidden_size=192)
    with pytest.raises(UserError, match="more than the teacher"):
        resolve_target(MINILM, HomoDistilConfig(output_dir=str(tmp_path), target_params="1B"))


def test_resolve_step():
    assert resolve_step(0.5, 300) == 150
    assert resolve_step(40, 300) == 40


def _schedule(kind, start=0, end=100, every=10):
    return WidthSchedule(Shape(384, 12, 32, 1536), Shape(192, 6, 32, 768), start, end, every, kind)


@pytest.mark.parametrize("kind", ["cubic", "linear", "oneshot"])
def test_widths_never_grow_and_reach_the_target(kind):
    sched = _schedule(kind, start=20, end=100)
    previous = sched.initial
    for step in range(0, 130):
        w = sched.widths_at(step)
        assert all(getattr(w, f) <= getattr(previous, f) for f in ("hidden", "heads", "head_dim", "intermediate"))
        previous = w
    assert sched.widths_at(19) == sched.initial
    assert sched.widths_at(100) == sched.target


def test_cubic_prunes_faster_early_than_linear():
    cubic, linear = _schedule("cubic"), _schedule("linear")
    assert cubic.widths_at(30).intermediate < linear.widths_at(30).intermediate
    assert cubic.widths_at(30).intermediate == 768 + round(768 * 0.7**3 + 0.5 - 1e-9)  # ceil of 768 * 0.343


def test_pruning_steps():
    sched = _schedule("cubic", start=5, end=47, every=10)
    steps = [s for s in range(60) if sched.is_pruning_step(s)]
    assert steps[:5] == [5, 15, 25, 35, 45] and 47 in steps
    one = _schedule("oneshot", start=3)
    assert [s for s in range(50) if one.is_pruning_step(s)] == [3]
    assert one.widths_at(3) == one.target


def test_rewound_replays_the_schedule_after_the_last_pruning_step():
    from homodistil_hf.pruning.schedule import rewound

    assert [rewound(s, 13, 16) for s in (0, 12)] == [0, 12]  # unchanged before
    assert rewound(13, 13, 16) == 0 and rewound(16, 13, 16) == 16  # from the start, ending where it would have
    assert rewound(14, 13, 16) == pytest.approx(16 / 3)
    assert rewound(20, 16, 16) == 20  # nothing left to rewind over
    assert WidthSchedule(Shape(64, 4, 16, 128), Shape(32, 2, 16, 48), 10, 60, 10, "oneshot").last_pruning_step == 10
    assert WidthSchedule(Shape(64, 4, 16, 128), Shape(32, 2, 16, 48), 0, 12, 2, "cubic").last_pruning_step == 12


@pytest.mark.parametrize("schedule, family", [("cubic", "bert"), ("oneshot", "bert"), ("cubic", "llama")])
def test_lr_rewind_restarts_the_learning_rate_after_the_last_pruning_step(tmp_path, schedule, family):
    """--lr_rewind, linear decay of 3e-3 over 16 steps: the learning rates the Trainer logs equal the plain run's up
    to the last pruning step (12, or 4 for one-shot), then start again from the peak and reach 0 at step 16. An
    encoder needs the flag; a decoder rewinds by default (`--lr_rewind false` is its plain run)."""
    import json

    import homodistil_hf.cli.run_distill as run_distill
    from homodistil_hf.pruning.schedule import rewound
    from homodistil_hf.testing import save_tiny_decoder, save_tiny_model, write_corpus

    if family == "bert":
        teacher, runs = save_tiny_model(tmp_path / "t", "bert", "mlm"), ([], ["--lr_rewind"])
    else:
        teacher, runs = save_tiny_decoder(tmp_path / "t", "llama"), (["--lr_rewind", "false"], [])
    corpus = write_corpus(tmp_path / "c.txt", 50)
    last = 4 if schedule == "oneshot" else 12
    lrs = []
    for i, extra in enumerate(runs):
        out = tmp_path / f"out{i}"
        run_distill.main(["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
                          "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--report_to", "none",
                          "--use_cpu", "--disable_tqdm", "true", "--log_level", "warning", "--max_steps", "16",
                          "--save_strategy", "no", "--logging_steps", "1", "--learning_rate", "3e-3",
                          "--target_hidden_size", "32", "--target_num_attention_heads", "2",
                          "--target_intermediate_size", "48", "--prune_every", "2", "--prune_start", "4",
                          "--prune_end", "12", "--pruning_schedule", schedule,
                          *(["--target_num_key_value_heads", "1"] if family == "llama" else []), *extra])
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        # (logged after step k: the rate step k - 1 used, counting from 0)
        lrs.append({h["step"] - 1: h["learning_rate"] for h in history if "learning_rate" in h})
    plain, rewind = lrs
    assert sorted(rewind) == list(range(16))
    for step, lr in rewind.items():
        expected = plain[step] if step <= last else 3e-3 * (1 - rewound(step, last + 1, 16) / 16)
        assert lr == pytest.approx(expected, rel=1e-6), step
    assert rewind[last + 1] == pytest.approx(3e-3) and plain[last + 1] < 3e-3 * (1 - last / 16) + 1e-9
