"""Homotopic depth pruning (`--target_num_hidden_layers`): a faded layer is the identity, masked == physical ==
exported with depth and width together, per-layer config fields follow, trainer runs end at the target depth, and a
run resumed in the middle of a fade is the uninterrupted run."""

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

import homodistil_hf.cli.run_distill as run_distill
from homodistil_hf.arch import get_adapter, is_norm
from homodistil_hf.config import LAYER_CHOICES, LAYER_FADES, HomoDistilConfig
from homodistil_hf.errors import UserError
from homodistil_hf.export import export_model
from homodistil_hf.loading import make_student
from homodistil_hf.pruning.depth import LayerFader
from homodistil_hf.pruning.importance import MagnitudeImportance
from homodistil_hf.pruning.pruner import DEPTH_FILE, STATE_FILE, Pruner
from homodistil_hf.pruning.state import PruningState
from homodistil_hf.pruning.targets import check_target
from homodistil_hf.testing import save_tiny_decoder, save_tiny_model, tiny_decoder, tiny_model, write_corpus

ENCODERS = ("bert", "roberta", "electra")
DECODERS = ("llama", "mistral", "qwen2", "qwen3", "gpt2")
FAMILIES = ENCODERS + DECODERS


def _model(family: str, layers: int = 3):
    """A tiny model with random norm weights (unit LayerNorms would make LN(LN(x)) == LN(x) and hide a post-norm
    that does not fade)."""
    if family in ENCODERS:
        model = tiny_model(family, "mlm", num_hidden_layers=layers)
    elif family == "gpt2":
        model = tiny_decoder("gpt2", n_layer=layers)
    else:
        extra = dict(use_sliding_window=True, sliding_window=4, max_window_layers=1) if family.startswith("qwen") else {}
        model = tiny_decoder(family, num_hidden_layers=layers, **extra)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if is_norm(m):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _target(model):
    kv = 1 if model.config.model_type in ("llama", "mistral", "qwen2", "qwen3") else None
    return check_target(model.config, 32, 2, 48, kv)


@pytest.mark.parametrize("fade", LAYER_FADES)
@pytest.mark.parametrize("family", FAMILIES)
def test_faded_layer_at_zero_is_the_layer_deleted(family, fade):
    model = _model(family)
    deleted = copy.deepcopy(model)
    adapter = get_adapter(model)
    adapter.remove_layers(deleted, [0, 2])
    fader = LayerFader(model, adapter, 3, fade=fade)
    fader.install([0, 1, 2])
    inputs = _inputs()
    full = _logits(model, inputs)
    fader.alpha = {1: 0.5}
    half = _logits(model, inputs)
    fader.alpha = {1: 0.0}
    faded = _logits(model, inputs)
    assert (faded - _logits(deleted, inputs)).abs().max() < 1e-5
    assert (half - faded).abs().max() > 1e-4 and (half - full).abs().max() > 1e-4  # the factor acts
    assert len(adapter.layer_list(deleted)) == 2 and deleted.config.num_hidden_layers == 2
    # renumbered: caches index by layer_idx
    idx = [m.layer_idx for m in deleted.modules() if isinstance(getattr(m, "layer_idx", None), int)]
    assert not idx or sorted(set(idx)) == [0, 1]


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_output_fade_mixes_the_layer_output_with_its_input(family):
    """--layer_fade output: a layer at factor a computes a L(x) + (1 - a) x (checked against the layer called by
    hand on the stream entering it); 'branches' computes something else in the middle of the fade."""
    model = _model(family)
    adapter = get_adapter(model)
    layer = adapter.layer_list(model)[1]
    fader = LayerFader(model, adapter, 3, fade="output")
    fader.install([0, 1, 2])
    seen = {}  # (a hook after the fader's: it sees the mixed output)
    handle = layer.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(args=args, kwargs=kwargs, y=out), with_kwargs=True)
    inputs = _inputs()
    fader.alpha = {1: 0.3}
    mixed_logits = _logits(model, inputs)
    handle.remove()
    fader.remove()
    out = seen["y"][0] if isinstance(seen["y"], tuple) else seen["y"]
    with torch.no_grad():
        raw = layer(*seen["args"], **{k: v for k, v in seen["kwargs"].items() if k != "cache"})
    raw = raw[0] if isinstance(raw, tuple) else raw
    x = seen["args"][0] if seen["args"] else seen["kwargs"]["hidden_states"]
    assert (out - (0.3 * raw + 0.7 * x)).abs().max() < 1e-5
    branches = LayerFader(model, adapter, 3, fade="branches")
    branches.install([0, 1, 2])
    branches.alpha = {1: 0.3}
    assert (_logits(model, inputs) - mixed_logits).abs().max() > 1e-4
    with pytest.raises(ValueError, match="layer fade"):
        LayerFader(model, adapter, 3, fade="gradual")
    with pytest.raises(UserError, match="--layer_fade"):
        HomoDistilConfig(output_dir="/tmp/x", layer_fade="none")


def test_per_layer_config_fields_are_cut():
    model = _model("qwen2")
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    get_adapter(model).set_depth(model.config, [0, 2])
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    assert model.config.max_window_layers == 1 and model.config.num_hidden_layers == 2
    config = _model("qwen2").config
    get_adapter(config).set_depth(config, [1, 2])
    assert config.layer_types == ["sliding_attention", "sliding_attention"] and config.max_window_layers == 0
    gpt2 = _model("gpt2")
    get_adapter(gpt2).set_depth(gpt2.config, [2])
    assert gpt2.config.n_layer == 1
    with pytest.raises(ValueError):
        get_adapter(gpt2).set_depth(gpt2.config, [3])


@pytest.mark.parametrize("fade", LAYER_FADES)
@pytest.mark.parametrize("family", FAMILIES)
def test_masked_equals_physical_equals_exported_with_depth_and_width(family, fade, tmp_path):
    inputs = _inputs(1)
    runs = {}
    for physical in (True, False):
        model = _model(family)
        pruner = Pruner(model, _target(model), MagnitudeImportance(), physical=physical, target_layers=2,
                        layer_importance="last", layer_fade=fade)
        pruner.prune_to(pruner.target)
        assert pruner.choose_layers() == [2]
        pruner.set_alpha(0.3)
        mid = _logits(model, inputs)
        pruner.set_alpha(0.0)
        zero = _logits(model, inputs)
        pruner.drop_faded()
        assert pruner.done and pruner.state.kept_layers == [0, 1]
        runs[physical] = (model, pruner, mid, zero, _logits(model, inputs))
    (pm, pp, *phys), (mm, mp, *masked) = runs[True], runs[False]
    assert pp.state.equals(mp.state)
    for a, b in zip(phys, masked, strict=True):
        assert (a - b).abs().max() < 1e-5
    assert (phys[1] - phys[2]).abs().max() < 1e-5  # alpha 0 == removed
    assert len(get_adapter(mm).layer_list(mm)) == 3 and len(get_adapter(pm).layer_list(pm)) == 2
    assert pp.layer_pairs() == [(0, 0), (1, 1)] and mp.layer_pairs() == [(0, 0), (1, 1)]
    assert pp.sparsity() == pytest.approx(mp.sparsity())

    auto = AutoModelForMaskedLM if family in ENCODERS else AutoModelForCausalLM
    export_model(mm, tmp_path / "export", mp.state, physical=False)
    loaded, info = auto.from_pretrained(tmp_path / "export", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.num_hidden_layers == 2
    assert (_logits(loaded.eval(), inputs) - masked[2]).abs().max() < 1e-5
    if family in DECODERS:
        prompt = inputs["input_ids"][:1, :5]
        with torch.no_grad():
            a = mm.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
            b = loaded.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_trainer_masks_and_physical_agree_when_the_last_layer_goes(family, tmp_path):
    """Decoders return the final norm's output as their last hidden state: with depth pruned, the hidden-state term
    pairs the student's final state with the teacher's, so the masked student (its removed last layer the identity,
    the final norm still last) and the physical one (one layer fewer) train alike, step for step."""
    from datasets import Dataset
    from transformers import default_data_collator

    from homodistil_hf import HomoDistilTrainer

    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": (ids := torch.randint(5, 100, (16,), generator=g).tolist()), "attention_mask": [1] * 16,
             "labels": ids} for _ in range(16)]
    losses, weights = {}, {}
    for mode in ("physical", "masks"):
        args = HomoDistilConfig(output_dir=str(tmp_path / mode), report_to="none", use_cpu=True, disable_tqdm=True,
                                seed=0, max_steps=8, per_device_train_batch_size=2, learning_rate=3e-3,
                                logging_steps=1, save_strategy="no", prune_every=2, prune_end=4,
                                target_num_hidden_layers=2, layer_importance="last", pruning_mode=mode,
                                importance="taylor_structure", target_hidden_size=32, target_num_attention_heads=2,
                                target_intermediate_size=48,
                                **({"target_num_key_value_heads": 1} if family == "llama" else {}))
        trainer = HomoDistilTrainer(teacher=_model(family), args=args, train_dataset=Dataset.from_list(rows),
                                    data_collator=default_data_collator)
        trainer.train()
        trainer.save_model()
        assert trainer.pruner.state.kept_layers == [0, 1]
        losses[mode] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        weights[mode] = load_file(tmp_path / mode / "model.safetensors")
    assert losses["physical"] == pytest.approx(losses["masks"], rel=1e-6)
    for name, value in weights["physical"].items():
        assert torch.allclose(value, weights["masks"][name], atol=1e-6), name


@pytest.mark.parametrize("metric", ["gate", "cosine"])
def test_layer_scores_are_measured_and_rank(metric):
    """Both scores become one positive number per layer; a layer whose branches are zeroed scores lowest."""
    model = tiny_decoder("llama", num_hidden_layers=3).train()
    with torch.no_grad():
        for p in (model.model.layers[1].self_attn.o_proj.weight, model.model.layers[1].mlp.down_proj.weight):
            p.mul_(1e-3)
    fader = LayerFader(model, get_adapter(model), 3, metric)
    fader.install([0, 1, 2])
    for seed in range(3):
        inputs = _inputs(seed)
        out = model(**inputs, labels=inputs["input_ids"])
        out.loss.backward()
        fader.step()
    assert (fader.ema > 0).all()
    assert fader.choose([0, 1, 2], 2) == [1]
    state = fader.state_dict()
    other = LayerFader(model, get_adapter(model), 3, metric)
    other.load_state_dict(state)
    assert torch.equal(other.ema, fader.ema)


def test_removed_layers_take_their_sensitivity_buffers_with_them():
    """Physical removal mid-window (sequential choice) frees the per-weight importance buffers of the removed layer."""
    from homodistil_hf.pruning.importance import SensitivityImportance

    model = tiny_decoder("llama", num_hidden_layers=3).train()
    importance = SensitivityImportance()
    pruner = Pruner(model, _target(model), importance, physical=True, target_layers=1)
    inputs = _inputs()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    importance.step()
    layer = model.model.layers[1]
    assert any(p in importance.ema for p in layer.parameters())
    pruner.apply(pruner.state.with_depth([0, 1, 2], [1]))
    pruner.drop_faded()
    live = set(model.parameters())
    assert importance.ema and set(importance.ema) <= live and set(importance.unc) <= live
    assert not any(p in importance.ema for p in layer.parameters())


def test_state_json_with_depth_and_old_states():
    state = PruningState.full(get_adapter(_model("bert")).shape_of(_model("bert").config), 3)
    assert state.kept_layers == [0, 1, 2] and "depth" not in state.to_dict()  # old checkpoints: all layers
    fading = state.with_depth([0, 1, 2], [1])
    back = PruningState.from_dict(json.loads(json.dumps(fading.to_dict())))
    assert back.kept_layers == [0, 1, 2] and back.fading_layers == [1] and back.surviving_layers == [0, 2]
    dropped = PruningState.from_dict(fading.with_depth([0, 2], []).to_dict())
    assert dropped.kept_layers == [0, 2] and dropped.fading_layers == []


def test_random_student_with_one_layer_saves(tmp_path):
    """Issue 19 item 5: a 1-layer random student of a Qwen2 teacher (layer_types follow the depth)."""
    teacher = tiny_decoder("qwen2")
    student, _ = make_student(teacher, "random", get_adapter(teacher).shape_of(teacher.config), num_layers=1)
    assert student.config.layer_types == ["full_attention"]
    student.save_pretrained(tmp_path / "s")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "s").config.num_hidden_layers == 1


def test_target_params_searches_the_widths_at_the_target_depth():
    """--target_params with --target_num_hidden_layers: the widths are searched at that depth, so the student is the
    closest valid shape to the count with that many layers (more width than at the teacher's depth)."""
    from homodistil_hf.pruning.targets import config_for_shape, count_backbone_params, resolve_target

    teacher = tiny_model("bert", "base", num_hidden_layers=4).config
    full = count_backbone_params(teacher)
    goal = full // 2
    deep = resolve_target(teacher, HomoDistilConfig(output_dir="/tmp/x", target_params=str(goal)))
    shallow = resolve_target(teacher, HomoDistilConfig(output_dir="/tmp/x", target_params=str(goal),
                                                       target_num_hidden_layers=2))
    assert shallow.hidden > deep.hidden  # half the layers: wider layers for the same count
    counts = []
    for shape in (shallow, deep):
        config = config_for_shape(teacher, shape)
        get_adapter(config).set_depth(config, [0, 1])
        counts.append(count_backbone_params(config))
    # At 2 layers the searched shape is nearer the count than the full-depth search's shape, which falls short.
    assert abs(counts[0] - goal) < abs(counts[1] - goal) and counts[1] < counts[0]


def test_depth_flags_are_checked():
    with pytest.raises(UserError, match="--layer_map"):
        HomoDistilConfig(output_dir="/tmp/x", layer_map="0:1", target_num_hidden_layers=1)
    with pytest.raises(UserError, match="--layer_importance"):
        HomoDistilConfig(output_dir="/tmp/x", layer_importance="size")
    from homodistil_hf.pruning.targets import check_depth_target
    with pytest.raises(UserError, match="larger than the teacher's 3"):
        check_depth_target(_model("bert").config, 4)
    with pytest.raises(UserError, match="scale_attn_by_inverse_layer_idx"):
        check_depth_target(tiny_decoder("gpt2", n_layer=3, scale_attn_by_inverse_layer_idx=True).config, 2)


# --- trainer runs ---------------------------------------------------------------------------------------------------
# The width resume test's preemption (a checkpoint at step 8, then the run is killed), reused as is.
from test_resume import STOP_AT, run_preempted  # noqa: E402


def _flags(teacher, corpus, out, *extra, max_steps=16):
    return ["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--report_to", "none", "--use_cpu",
            "--disable_tqdm", "true", "--log_level", "warning", "--max_steps", str(max_steps), "--save_steps", "4",
            "--logging_steps", "1", "--learning_rate", "3e-3", "--seed", "7", "--prune_every", "2",
            "--prune_end", "12", "--target_num_hidden_layers", "2", *extra]


@pytest.fixture(scope="module")
def encoder_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth")
    teacher = save_tiny_model(root / "teacher", "bert", "mlm", hidden_dropout_prob=0.1, num_hidden_layers=3)
    return teacher, write_corpus(root / "corpus.txt", 50)


@pytest.mark.parametrize("mode, extra", [
    ("physical", ["--target_hidden_size", "32", "--target_num_attention_heads", "2", "--layer_choice", "at_start"]),
    ("masks", ["--layer_importance", "cosine"]),
])
def test_resume_mid_fade_equals_uninterrupted_run(encoder_setup, tmp_path, monkeypatch, mode, extra):
    teacher, corpus = encoder_setup
    flags = ["--pruning_mode", mode, *extra]
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_distill.main(_flags(teacher, corpus, full, *flags))

    run_preempted(monkeypatch, _flags(teacher, corpus, cut, *flags))
    checkpoint = cut / f"checkpoint-{STOP_AT}"
    state = json.loads((checkpoint / STATE_FILE).read_text())
    assert len(state["fading"]) == 1 and state.get("depth") is None  # mid-fade: chosen, not removed yet
    assert (checkpoint / DEPTH_FILE).is_file()
    run_distill.main(_flags(teacher, corpus, cut, *flags, "--resume_from_checkpoint", str(checkpoint)))

    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    info = json.loads((full / "homodistil.json").read_text())
    assert info["num_layers"] == 2 and info["kept_from_teacher"]["depth"] == sorted(
        set(range(3)) - set(state["fading"]))
    loaded, load_info = AutoModelForMaskedLM.from_pretrained(full, output_loading_info=True)
    assert loaded.config.num_hidden_layers == 2 and not load_info["missing_keys"]
    history = [json.loads((d / "trainer_state.json").read_text())["log_history"] for d in (full, cut)]
    losses = [{h["step"]: h["loss"] for h in hist if "loss" in h} for hist in history]
    for step in range(STOP_AT + 1, 17):
        assert losses[1][step] == losses[0][step], step


def test_decoder_depth_only_run_ends_at_the_target_depth(tmp_path):
    teacher = save_tiny_decoder(tmp_path / "teacher", "qwen2", num_hidden_layers=3, use_sliding_window=True,
                                sliding_window=8, max_window_layers=2)
    corpus = write_corpus(tmp_path / "corpus.txt", 50)
    out = tmp_path / "out"
    run_distill.main(_flags(teacher, corpus, out, "--max_steps", "14", "--save_steps", "100"))
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert model.config.num_hidden_layers == 2 and len(model.config.layer_types) == 2
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.hidden_size == 64  # widths untouched


def test_depth_schedule_sequential_counts_and_factors():
    """`--layer_choice sequential`: the count chosen follows the widths' curve one pruning period ahead, reaches every
    layer to remove by the window's end, and each group's factor falls from 1 to 0 over its period."""
    from homodistil_hf.arch import Shape
    from homodistil_hf.pruning.schedule import DepthSchedule, WidthSchedule

    shape = Shape(64, 4, 16, 128, 4)
    widths = WidthSchedule(shape, shape, 0, 60, 10, "cubic")
    seq, at_start = DepthSchedule(widths, 15, "sequential"), DepthSchedule(widths, 15, "at_start")
    counts = [seq.chosen_by(s) for s in range(0, 61, 10)]
    assert counts == sorted(counts) and counts[0] > 0 and counts[-1] == 15 and len(set(counts)) > 3
    assert counts[0] == 15 - math.ceil(15 * (5 / 6) ** 3)  # what the curve removed by the next pruning step
    assert [seq.factor(s) for s in (10, 11, 15, 20, 60, 70)] == pytest.approx([0.0, 0.9, 0.5, 0.0, 0.0, 0.0])
    assert [seq.is_choice_step(s) for s in (0, 5, 10, 61)] == [True, False, True, True]
    assert at_start.chosen_by(0) == 15 and at_start.factor(30) == widths.fraction_kept(30)
    assert seq.new_factor(10) == 1.0 and seq.new_factor(60) == 0.0
    oneshot = DepthSchedule(WidthSchedule(shape, shape, 0, 60, 10, "oneshot"), 15, "sequential")
    assert oneshot.chosen_by(0) == 15 and oneshot.new_factor(0) == 0.0
    # Chosen once the scores cover a pruning period (they are kept from one period before the window's start).
    first = {(start, end, kind): DepthSchedule.after_scores(WidthSchedule(shape, shape, start, end, 10, kind), 3).widths.start
             for start, end, kind in [(0, 60, "cubic"), (4, 60, "linear"), (20, 60, "cubic"), (0, 6, "cubic"),
                                      (0, 60, "oneshot")]}
    assert list(first.values()) == [10, 14, 20, 6, 0]
    # --layer_choice auto for encoders: sequential when widths are pruned too, at_start for depth alone.
    assert [DepthSchedule.resolve_choice("auto", w) for w in (True, False)] == ["sequential", "at_start"]
    # decoders choose all their layers at once, with widths too (SmolLM2: at_start ahead of sequential)
    assert [DepthSchedule.resolve_choice("auto", w, causal_lm=True) for w in (True, False)] == ["at_start"] * 2
    assert DepthSchedule.resolve_choice("at_start", True) == "at_start"


@pytest.fixture(scope="module")
def deep_encoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth4")
    # No dropout: a masked (identity) layer still draws dropout masks, a removed one does not, so with dropout the
    # two modes' random streams part at the first removal.
    teacher = save_tiny_model(root / "teacher", "bert", "mlm", hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0, num_hidden_layers=4)
    return teacher, write_corpus(root / "corpus.txt", 50)


SEQUENTIAL = ["--layer_choice", "sequential", "--pruning_schedule", "linear", "--target_num_hidden_layers", "1",
              "--layer_importance", "cosine"]


def test_sequential_choice_resumes_mid_fade_and_masks_equal_physical(deep_encoder, tmp_path, monkeypatch):
    """4 -> 1 layers one group at a time (linear curve, a pruning step every 2 of 12; layers are chosen once their
    scores cover a period, so from step 2: one layer chosen at step 4 and removed at 6, one chosen at 8 and removed
    at 10, the last at 10 / 12). Resumed from the checkpoint at step 8 (one layer removed, none fading: in masks
    mode it must stay the identity) and from the one at step 10 (one removed, one fading, one still to choose: the
    layer scores must go on), the run equals the uninterrupted one bit for bit, layer scores included; masks train
    as surgery does."""
    teacher, corpus = deep_encoder
    losses, kept = {}, {}
    for mode in ("physical", "masks"):
        flags = ["--pruning_mode", mode, *SEQUENTIAL, "--save_steps", "2"]
        full, cut = tmp_path / mode / "full", tmp_path / mode / "cut"
        run_distill.main(_flags(teacher, corpus, full, *flags))
        run_preempted(monkeypatch, _flags(teacher, corpus, cut, *flags))
        between = json.loads((cut / f"checkpoint-{STOP_AT}" / STATE_FILE).read_text())
        assert len(between["depth"]) == 3 and not between.get("fading"), between
        fading = json.loads((full / "checkpoint-10" / STATE_FILE).read_text())
        assert len(fading["depth"]) == 3 and len(fading["fading"]) == 1, fading
        resumed = {cut: cut / f"checkpoint-{STOP_AT}", tmp_path / mode / "cut10": full / "checkpoint-10"}
        plan = load_file(full / "checkpoint-10" / DEPTH_FILE)["plan"].tolist()
        assert plan == [LAYER_CHOICES.index("sequential"), 2]  # the choice and first choice step, saved
        for out, checkpoint in resumed.items():
            # The checkpoint's plan wins over the flag (a resumed run goes on as it started).
            other = ["--layer_choice", "at_start"] if out.name == "cut10" else []
            run_distill.main(_flags(teacher, corpus, out, *flags, *other, "--resume_from_checkpoint",
                                    str(checkpoint)))
            a, b = load_file(full / "model.safetensors"), load_file(out / "model.safetensors")
            assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) == 0.0, checkpoint
            scores = [load_file(d / "checkpoint-12" / DEPTH_FILE)["layer_scores"] for d in (full, out)]
            assert torch.equal(scores[0], scores[1]), checkpoint  # recorded on after the resume, as without it
        info = json.loads((full / "homodistil.json").read_text())
        kept[mode] = info["kept_from_teacher"]["depth"]
        assert info["num_layers"] == 1 and set(kept[mode]) < set(fading["depth"])
        history = json.loads((full / "trainer_state.json").read_text())["log_history"]
        losses[mode] = [h["loss"] for h in history if "loss" in h]
    assert kept["physical"] == kept["masks"]
    assert losses["physical"] == pytest.approx(losses["masks"], rel=1e-5)
