"""Resume: a run pre-empted at a checkpoint in the middle of the pruning schedule and resumed with
`--resume_from_checkpoint` ends with exactly the model and pruning state of the uninterrupted run.

The interruption is a callback that raises right after checkpoint-8 is complete (what a kill at that moment leaves
on disk: no export, nothing after the checkpoint); the resumed run is a fresh `main()` with the same flags. The
schedule is identical in every run (same --max_steps), and the run crosses an epoch boundary after the checkpoint.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import homodistil_hf.cli.run_distill as run_distill
from homodistil_hf.errors import UserError
from homodistil_hf.pruning.pruner import IMPORTANCE_FILE, STATE_FILE
from homodistil_hf.testing import save_tiny_model, write_corpus

STOP_AT = 8
TEACHER = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    # Dropout on, so the restored RNG state matters too.
    teacher = save_tiny_model(root / "teacher", "bert", "mlm", hidden_dropout_prob=0.1)
    corpus = write_corpus(root / "corpus.txt", 50)  # 24 blocks of 32 tokens: 6 steps an epoch at batch 4
    return teacher, corpus


class Preempted(Exception):
    pass


class _KillAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == STOP_AT:
            raise Preempted(state.global_step)


def run_preempted(monkeypatch, argv) -> None:
    """`run_distill.main(argv)`, killed (`Preempted`) right after it writes `checkpoint-{STOP_AT}`."""

    class Preemptible(run_distill.HomoDistilTrainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), _KillAfterCheckpoint()], **kwargs)

    with monkeypatch.context() as m:
        m.setattr(run_distill, "HomoDistilTrainer", Preemptible)
        with pytest.raises(Preempted):
            run_distill.main(list(argv))


ENCODER_TARGET = ["--target_hidden_size", "32", "--target_num_attention_heads", "2", "--target_intermediate_size", "48"]
DECODER_TARGET = [*ENCODER_TARGET, "--target_num_key_value_heads", "1"]


def _flags(teacher, corpus, out, mode, importance, *extra, max_steps=16, targets=True, target=ENCODER_TARGET):
    target_flags = list(target) if targets else []
    return ["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--report_to", "none", "--use_cpu",
            "--disable_tqdm", "true", "--log_level", "warning", "--max_steps", str(max_steps), "--save_steps", "4",
            "--logging_steps", "1", "--learning_rate", "3e-3", "--seed", "7", *target_flags, "--prune_every", "2",
            "--prune_end", "12", "--pruning_mode", mode, "--importance", importance, *extra]


def _losses(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


CASES = [
    ("physical", "sensitivity", []),
    ("masks", "sensitivity", []),
    ("physical", "activation", []),
    pytest.param("masks", "activation", [], marks=pytest.mark.slow),
    pytest.param("physical", "random", [], marks=pytest.mark.slow),
    pytest.param("masks", "magnitude", ["--gradient_accumulation_steps", "2"], marks=pytest.mark.slow),
    ("physical", "sensitivity", ["--gradient_accumulation_steps", "2", "--pruning_schedule", "linear"]),
    ("physical", "taylor_structure", ["--lr_rewind"]),  # the rewound schedule is rebuilt on resume (at step 13)
]


@pytest.mark.parametrize("mode, importance, extra", CASES)
def test_resumed_run_equals_uninterrupted_run(setup, tmp_path, monkeypatch, mode, importance, extra):
    teacher, corpus = setup
    _check_resume(teacher, corpus, tmp_path, monkeypatch, mode, importance, extra, ENCODER_TARGET,
                  {"hidden": 32, "heads": 2, "head_dim": 16, "intermediate": 48})


@pytest.mark.parametrize("mode, importance", [("physical", "sensitivity"), ("masks", "taylor_structure")])
def test_resumed_decoder_run_equals_uninterrupted_run(tmp_path, monkeypatch, mode, importance):
    """The same for a Llama student under grouped-query attention (4 heads in 2 groups -> 2 heads in 1); the
    checkpoint's mid-pruning widths need not satisfy Llama's hidden % heads config validation."""
    from homodistil_hf.testing import save_tiny_decoder

    teacher = save_tiny_decoder(tmp_path / "teacher", "llama")
    corpus = write_corpus(tmp_path / "corpus.txt", 50)
    _check_resume(teacher, corpus, tmp_path, monkeypatch, mode, importance, [], DECODER_TARGET,
                  {"hidden": 32, "heads": 2, "head_dim": 16, "intermediate": 48, "kv_heads": 1})


def _check_resume(teacher, corpus, tmp_path, monkeypatch, mode, importance, extra, target, final_shape):
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_distill.main(_flags(teacher, corpus, full, mode, importance, *extra, target=target))

    # The pre-empted run: same flags, killed right after writing checkpoint-8.
    run_preempted(monkeypatch, _flags(teacher, corpus, cut, mode, importance, *extra, target=target))
    checkpoint = cut / f"checkpoint-{STOP_AT}"
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert not (cut / "model.safetensors").exists()

    # The checkpoint is inside the pruning schedule: pruned already, not yet at the target.
    state = json.loads((checkpoint / STATE_FILE).read_text())
    final = json.loads((full / "homodistil.json").read_text())["shape"]
    assert final == final_shape
    assert 32 < len(state["hidden"]) < 64 and 48 < len(state["layers"][0]["ffn"]) < 128
    if importance in ("sensitivity", "taylor_structure", "activation"):  # score buffers are in the checkpoint
        assert len(load_file(checkpoint / IMPORTANCE_FILE)) > 0

    run_distill.main(_flags(teacher, corpus, cut, mode, importance, *extra, "--resume_from_checkpoint",
                            str(checkpoint), target=target))

    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys()
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff <= 1e-5, diff
    kept = [json.loads((d / "homodistil.json").read_text())["kept_from_teacher"] for d in (full, cut)]
    assert kept[0] == kept[1]
    for step in (12, 16):  # the states the resumed run saved on its way
        assert (json.loads((full / f"checkpoint-{step}" / STATE_FILE).read_text())
                == json.loads((cut / f"checkpoint-{step}" / STATE_FILE).read_text()))
    # The same losses step by step after the checkpoint (same masks, dropout and data order).
    losses_full, losses_cut = _losses(full), _losses(cut)
    assert set(range(STOP_AT + 1, 17)) <= set(losses_cut)
    for step in range(STOP_AT + 1, 17):
        assert losses_cut[step] == pytest.approx(losses_full[step], rel=1e-5, abs=1e-6), step


def test_resume_needs_the_pruning_state(setup, tmp_path):
    """A checkpoint without pruning_state.json (e.g. from a run without targets) is refused with a clear error."""
    teacher, corpus = setup
    out = tmp_path / "plain"
    run_distill.main(_flags(teacher, corpus, out, "physical", "magnitude", max_steps=4, targets=False))
    with pytest.raises(UserError, match="has no pruning_state.json"):
        run_distill.main(_flags(teacher, corpus, out, "physical", "magnitude", "--resume_from_checkpoint",
                                str(out / "checkpoint-4")))


def test_masks_are_seeded_by_the_batch_not_the_global_rng():
    """The collator behind exact resumes: the same batch gets the same masks whatever the global RNG did, another
    epoch gets new ones, and the global RNG (dropout) is not consumed."""
    from homodistil_hf.data import ResumableMLMCollator
    from homodistil_hf.testing import tiny_tokenizer

    collator = ResumableMLMCollator(tiny_tokenizer(), mlm_probability=0.3, mask_seed=1)
    g = torch.Generator().manual_seed(0)
    batch = [{"input_ids": torch.randint(5, 300, (32,), generator=g).tolist()} for _ in range(4)]
    torch.manual_seed(0)
    first = collator(batch)
    torch.manual_seed(123)
    again = collator(batch)
    after = torch.get_rng_state()
    assert torch.equal(after, torch.manual_seed(123).get_state())  # nothing drawn from the global RNG
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert (first["labels"] != -100).any()
    collator.epoch = 1
    assert not torch.equal(collator(batch)["labels"], first["labels"])
