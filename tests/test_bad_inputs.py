"""User mistakes given to `run_distill.py`, one table: each ends quickly (no training, no weights written) with a
non-zero exit and exactly one `error: ...` line on stderr naming the flag, path or value and what to do, no
traceback, and a file already in the output folder still there, untouched.

Every case runs in-process through `run_cli(main, argv)` (fast: the default run); the same table runs as real
`python run_distill.py` subprocesses under `-m slow`, and one representative case does by default, where library
warnings on stderr would show.
"""

import importlib.util
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from transformers import OPTConfig, OPTForCausalLM
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

import homodistil_hf.cli.run_distill as run_distill
from homodistil_hf.arch import Shape
from homodistil_hf.cli.common import run_cli
from homodistil_hf.pruning.pruner import STATE_FILE
from homodistil_hf.pruning.state import PruningState
from homodistil_hf.testing import save_tiny_model, tiny_model, tiny_tokenizer, tiny_vocab, write_corpus

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "keep.txt"
SENTINEL_TEXT = "a file the user had here before the run\n"


@dataclass
class Case:
    id: str
    expect: list[str]  # substrings of the error line (flag, path or value, and the way out)
    set: dict = field(default_factory=dict)  # flag -> value; None drops the flag
    extra: list[str] = field(default_factory=list)  # raw arguments appended
    argv: list[str] | None = None  # the whole command line instead of the flags
    output: str = "sentinel"  # 'sentinel': an existing folder with a user file; 'model': it holds a model too; 'new'
    subprocess: bool = False  # also run as a subprocess in the default run
    loads_weights: bool = False  # the mistake shows only when the teacher's weights load
    env: dict = field(default_factory=dict)  # environment variables for the run (e.g. HF_HUB_OFFLINE)


# {t}: the teacher folder, {d}: the fixture folder, {o}: the output folder.
TARGET_FLAGS = ("--target_hidden_size", "--target_num_attention_heads", "--target_intermediate_size")
CASES = [
    Case("missing_train_file", ["--train_file", "nope.txt", "does not exist"], {"--train_file": "{d}/nope.txt"}),
    Case("empty_train_file", ["--train_file", "empty.txt", "is empty"], {"--train_file": "{d}/empty.txt"}),
    Case("unknown_extension", ["--train_file", "corpus.parquet", "unknown extension", ".txt"],
         {"--train_file": "{d}/corpus.parquet"}),
    Case("validation_format", ["--validation_file", "same format"], {"--validation_file": "{d}/val.csv"}),
    Case("no_corpus", ["--dataset_name", "--train_file"], {"--train_file": None}),
    Case("optimizer_state_not_per_weight", ["--optim adafactor", "--pruning_mode masks"], {"--optim": "adafactor"}),
    Case("teacher_missing", ["--teacher_name_or_path", "no-such-teacher"],
         {"--teacher_name_or_path": "{d}/no-such-teacher"}),
    Case("teacher_unsupported", ["--teacher_name_or_path", "opt", "'opt'", "supported model types: bert"],
         {"--teacher_name_or_path": "{d}/opt"}),
    Case("teacher_without_weights", ["--teacher_name_or_path", "config-only", "model.safetensors"],
         {"--teacher_name_or_path": "{d}/config-only"}, loads_weights=True),
    Case("teacher_missing_flag", ["--teacher_name_or_path", "required"], {"--teacher_name_or_path": None}),
    Case("target_larger", ["--target_hidden_size 128", "teacher's 64", "1..64"], {"--target_hidden_size": "128"}),
    Case("target_heads_not_stock", ["--target_num_attention_heads 3", "valid head counts for hidden 40"],
         {"--target_hidden_size": "40", "--target_num_attention_heads": "3"}),
    Case("target_params_malformed", ["--target_params", "12x", "17.3M"], {"--target_params": "12x"}),
    Case("target_params_too_large", ["--target_params", "more than the teacher"], {"--target_params": "5B"}),
    Case("all_alphas_zero", ["all loss weights are 0", "--alpha_mlm"],
         {"--alpha_mlm": "0", "--alpha_pred": "0", "--alpha_hidden": "0", "--alpha_attn": "0"}),
    Case("temperature_zero", ["--temperature", "> 0", "got 0"], {"--temperature": "0"}),
    Case("temperature_negative", ["--temperature", "> 0", "-1"], {"--temperature": "-1"}),
    Case("seq_length_beyond_positions", ["--max_seq_length 512", "128 positions"], {"--max_seq_length": "512"}),
    Case("tokenizer_vocab_mismatch", ["tokenizer has", "vocabulary has", "--tokenizer_name"],
         {"--tokenizer_name": "{d}/big-tokenizer"}),
    Case("random_student_no_projection", ["hidden size (32) differs from the teacher's (64)", "--hidden_projection"],
         {"--student_init": "random", "--target_hidden_size": "32", "--target_num_attention_heads": "2"}),
    Case("truncate_without_targets", ["--student_init truncate", "--target_"], {"--student_init": "truncate"}),
    Case("output_dir_holds_model", ["--output_dir", "already holds", "--overwrite_output_dir"], output="model",
         subprocess=True),
    Case("output_dir_is_a_file", ["--output_dir", "is a file"], {"--output_dir": "{d}/empty.txt"}, output="new"),
    Case("output_dir_unwritable", ["--output_dir", "not writable", "another folder"],
         {"--output_dir": "{d}/empty.txt/sub/out"}, output="new"),
    Case("layer_map_malformed", ["--layer_map", "'a:b'", "'s:t' pairs"], {"--layer_map": "a:b"}),
    Case("layer_map_out_of_range", ["--layer_map", "'1:5'", "out of range"], {"--layer_map": "0:0,1:5"}),
    Case("layer_map_missing_layer", ["--layer_map", "'0:1'", "each student layer"], {"--layer_map": "0:1"}),
    Case("prune_end_before_start", ["--prune_end (5.0) is before --prune_start (10.0)"],
         {"--prune_start": "10", "--prune_end": "5"}),
    Case("prune_every_zero", ["--prune_every", ">= 1"], {"--prune_every": "0"}),
    Case("prune_start_after_the_run", ["--prune_start 50 ends pruning at step 50", "lower --prune_start"],
         {"--pruning_schedule": "oneshot", "--prune_start": "50"}),
    Case("lr_rewind_without_targets", ["--lr_rewind", "pruning targets"],
         {"--lr_rewind": "true", **dict.fromkeys(TARGET_FLAGS)}),
    Case("resume_missing_checkpoint", ["--resume_from_checkpoint", "checkpoint-999", "not a folder"],
         {"--resume_from_checkpoint": "{o}/checkpoint-999"}),
    Case("resume_last_without_checkpoint", ["--resume_from_checkpoint", "no checkpoint-"],
         {"--resume_from_checkpoint": "True"}),
    Case("resume_without_pruning_state", ["--resume_from_checkpoint", "pruning_state.json", "targets"],
         {"--resume_from_checkpoint": "{d}/plain-checkpoint"}),
    Case("json_config_missing", ["config file", "missing.json", "does not exist"], argv=["{d}/missing.json"]),
    Case("json_config_unknown_key", ["not_a_flag"], argv=["{d}/bad-config.json"]),
    Case("unknown_flag", ["--not_a_flag", "--help"], extra=["--not_a_flag", "1"]),
    Case("bad_choice", ["--importance", "fisher", "is not one of"], {"--importance": "fisher"}),
    Case("not_a_number", ["--learning_rate", "fast"], {"--learning_rate": "fast"}),
    Case("negative_alpha", ["--alpha_pred must be >= 0"], {"--alpha_pred": "-1"}),
    Case("mlm_probability", ["--mlm_probability", "[0, 1)"], {"--mlm_probability": "1.5"}),
    Case("text_column", ["--text_column_name", "'body'", "columns: text"], {"--text_column_name": "body"}),
    Case("corpus_too_small", ["no full 128-token block", "--max_seq_length"],
         {"--train_file": "{d}/short.txt", "--max_seq_length": "128"}),
    Case("fsdp_on_cpu", ["--fsdp on CPU", "would get DDP", "drop --fsdp"], extra=["--fsdp", "full_shard"]),
    Case("json_config_invalid", ["config file", "broken.json", "not valid JSON"], argv=["{d}/broken.json"]),
    Case("depth_without_random_init", ["--student_num_hidden_layers 1", "--student_init random"],
         {"--student_num_hidden_layers": "1"}),
    Case("streaming_without_max_steps", ["--streaming needs --max_steps"],
         {"--streaming": "true", "--max_steps": None}),
    Case("train_file_is_directory", ["--train_file", "a-folder", "is a directory", "pass a text"],
         {"--train_file": "{d}/a-folder"}),
    Case("binary_corpus", ["--train_file", "binary.txt", "not UTF-8 text", "binary data at byte"],
         {"--train_file": "{d}/binary.txt"}, subprocess=True),
    Case("binary_past_the_sniffed_start", ["--train_file", "late-binary.txt", "not UTF-8 text"],
         {"--train_file": "{d}/late-binary.txt"}),
    Case("teacher_is_a_file", ["--teacher_name_or_path", "config.json", "is a file", "model folder"],
         {"--teacher_name_or_path": "{t}/config.json"}),
    Case("tokenizer_missing", ["--tokenizer_name", "no-such-tokenizer", "does not exist", "Hub id"],
         {"--tokenizer_name": "{d}/no-such-tokenizer"}),
    Case("max_steps_negative", ["--max_steps", "-1 (unset", "got -5"], {"--max_steps": "-5"}),
    Case("max_steps_zero", ["--max_steps", "positive", "got 0"], {"--max_steps": "0"}),
    Case("batch_size_zero", ["--per_device_train_batch_size must be >= 1", "got 0"],
         {"--per_device_train_batch_size": "0"}),
    Case("gradient_accumulation_zero", ["--gradient_accumulation_steps must be >= 1"],
         {"--gradient_accumulation_steps": "0"}),
    Case("prune_end_after_max_steps", ["--prune_end 50", "step 50", "--max_steps 2", "never be reached"],
         {"--prune_end": "50"}),
    # 0.9 of 2 steps rounds to step 2, one past the last step (1): the schedule would end outside the run too.
    Case("prune_end_fraction_at_the_end", ["--prune_end 0.9", "step 2", "the last is step 1"], {"--prune_end": "0.9"}),
    Case("prune_end_after_epochs", ["--prune_end 500", "--num_train_epochs 1", "never be reached"],
         {"--max_steps": None, "--num_train_epochs": "1", "--prune_end": "500"}),
    # Issue 19.
    Case("resume_checkpoint_of_narrower_target", ["--resume_from_checkpoint", "hidden 48, 3 heads x 16, FFN 56",
                                                  "target hidden 48, 3 heads x 16, FFN 64", "FFN already smaller"],
         {"--resume_from_checkpoint": "{d}/narrow-checkpoint"}),
    Case("blank_lines_corpus", ["--train_file", "blank.txt", "only blank lines"], {"--train_file": "{d}/blank.txt"}),
    Case("csv_numeric_first_column", ["'id'", "no 'text' column", "int64 values", "--text_column_name",
                                      "columns: id, sentence"], {"--train_file": "{d}/numeric.csv"}),
    Case("resume_true_without_output_dir", ["--resume_from_checkpoint true", "does not exist", "no checkpoint"],
         {"--resume_from_checkpoint": "true"}, output="new"),
    Case("json_config_then_flags", ["config file", "cannot be combined with flags"],
         argv=["{d}/broken.json", "--max_steps", "3"]),
    Case("flags_then_json_config", ["config file", "ds.json", "cannot be combined with flags"], extra=["{d}/ds.json"]),
    Case("hub_id_offline", ["--teacher_name_or_path someorg/no-such-model", "offline mode is on", "HF_HUB_OFFLINE"],
         {"--teacher_name_or_path": "someorg/no-such-model"}, env={"HF_HUB_OFFLINE": "1"}),
]
if importlib.util.find_spec("deepspeed") is None:
    CASES.append(Case("deepspeed_not_installed", ["a flag needs deepspeed", "pip install"],
                      {"--deepspeed": "{d}/ds.json"}))

BASE = {"--teacher_name_or_path": "{t}", "--train_file": "{d}/corpus.txt", "--output_dir": "{o}",
        "--per_device_train_batch_size": "4", "--max_seq_length": "32", "--report_to": "none", "--use_cpu": None,
        "--max_steps": "2", "--save_strategy": "no", "--disable_tqdm": "true", "--target_hidden_size": "48",
        "--target_num_attention_heads": "3", "--target_intermediate_size": "64"}


def _argv(case: Case, teacher: Path, data: Path, out: Path) -> list[str]:
    fill = {"t": str(teacher), "d": str(data), "o": str(out)}
    if case.argv is not None:
        return [a.format(**fill) for a in case.argv]
    flags = dict(BASE)
    if any(k in case.set for k in ("--target_params", "--student_init")):
        for k in TARGET_FLAGS:  # the case sets its own shape
            flags.pop(k)
    flags.update(case.set)
    argv = []
    for flag, value in flags.items():
        if flag == "--use_cpu":
            argv.append(flag)
        elif value is not None:
            argv += [flag, value.format(**fill)]
    return argv + case.extra


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The teacher and every broken input the table points at."""
    d = tmp_path_factory.mktemp("bad")
    teacher = save_tiny_model(d / "teacher", "bert", "mlm")
    write_corpus(d / "corpus.txt", 100)
    (d / "short.txt").write_text("Just one short line.\n")
    (d / "empty.txt").write_text("")
    (d / "a-folder").mkdir()
    (d / "binary.txt").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    # Text for longer than the sniffed start (validate.SNIFF_BYTES), then bytes that are not UTF-8.
    (d / "late-binary.txt").write_bytes((d / "corpus.txt").read_bytes() * 40 + b"\xff\xfe\x00binary\n")
    (d / "corpus.parquet").write_text("not really parquet\n")
    (d / "val.csv").write_text("text\nHello there.\n")
    OPTForCausalLM(OPTConfig(num_hidden_layers=1, hidden_size=16, ffn_dim=32, num_attention_heads=2, vocab_size=50,
                             max_position_embeddings=64)).save_pretrained(d / "opt")
    (d / "config-only").mkdir()
    (d / "config-only" / "config.json").write_text((teacher / "config.json").read_text())
    tiny_tokenizer(tiny_vocab() + [f"extra{i}" for i in range(100)]).save_pretrained(d / "big-tokenizer")
    plain = d / "plain-checkpoint"  # a checkpoint of a run without targets: weights, no pruning state
    plain.mkdir()
    for name in ("config.json", "model.safetensors"):
        (plain / name).write_bytes((teacher / name).read_bytes())
    (plain / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    narrow = d / "narrow-checkpoint"  # a checkpoint of a run pruned past this table's target (FFN 56 < 64)
    narrow.mkdir()
    config = json.loads((teacher / "config.json").read_text())
    initial = Shape(config["hidden_size"], config["num_attention_heads"],
                    config["hidden_size"] // config["num_attention_heads"], config["intermediate_size"])
    PruningState.first(initial, Shape(48, 3, 16, 56), config["num_hidden_layers"]).save(narrow / STATE_FILE)
    (d / "blank.txt").write_text("\n  \n\t\n" * 50)
    (d / "numeric.csv").write_text("id,sentence\n" + "".join(f"{i},Sentence number {i} is here.\n" for i in range(50)))
    (d / "broken.json").write_text('{"teacher_name_or_path": ')
    (d / "ds.json").write_text(json.dumps({"train_batch_size": 4}))
    (d / "bad-config.json").write_text(json.dumps({"teacher_name_or_path": str(teacher), "output_dir": str(d / "o"),
                                                   "not_a_flag": 1}))
    return teacher, d


def _output_dir(case: Case, root: Path) -> Path:
    out = root / "out"
    if case.output in ("sentinel", "model"):
        out.mkdir()
        (out / SENTINEL).write_text(SENTINEL_TEXT)
    if case.output == "model":
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"previous weights")
    return out


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.is_dir():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}


def _check(case: Case, code, stderr: str, out: Path, before, data_dir: Path, teacher: Path) -> None:
    assert code not in (0, None), f"exit status {code}"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    for text in case.expect:
        assert text in lines[0], (text, lines[0])
    # Nothing in the output folder was removed, changed or added; nothing appeared elsewhere in the fixtures.
    assert _snapshot(out) == before
    if before is not None:
        assert (out / SENTINEL).read_text() == SENTINEL_TEXT
    assert not list(data_dir.glob("o")), "the JSON config's output_dir was created"
    assert not list(teacher.glob("checkpoint-*"))


class _NoTraining(Exception):
    pass


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_in_process(case, data, tmp_path, capsys, monkeypatch):
    teacher, d = data
    out = _output_dir(case, tmp_path)
    before = _snapshot(out)

    def no_training(self, *args, **kwargs):
        raise _NoTraining(f"{case.id}: training started")

    def no_weights(*args, **kwargs):
        raise _NoTraining(f"{case.id}: the teacher's weights were loaded before the mistake was found")

    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.env.get("HF_HUB_OFFLINE"):  # read once, at import
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(run_distill.HomoDistilTrainer, "train", no_training)
    if not case.loads_weights:
        monkeypatch.setattr(run_distill, "load_teacher", no_weights)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(run_distill.main, _argv(case, teacher, d, out))
    _check(case, exit_info.value.code, capsys.readouterr().err, out, before, d, teacher)
    # No global state left behind for the next run in this process (e.g. a half-built DeepSpeed config).
    assert not is_deepspeed_zero3_enabled()
    tiny_model()


def _subprocess(case, data, tmp_path):
    teacher, d = data
    out = _output_dir(case, tmp_path)
    before = _snapshot(out)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **case.env)
    proc = subprocess.run([sys.executable, str(ROOT / "run_distill.py"), *_argv(case, teacher, d, out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    _check(case, proc.returncode, proc.stderr, out, before, d, teacher)
    assert proc.returncode == 2
    return proc


QUICK = [c for c in CASES if c.subprocess]


@pytest.mark.parametrize("case", QUICK, ids=[c.id for c in QUICK])
def test_bad_input_subprocess(case, data, tmp_path):
    _subprocess(case, data, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_subprocess_all(case, data, tmp_path):
    proc = _subprocess(case, data, tmp_path)
    # Library chatter does not bury the error: it is the last line, and nothing else warns.
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error:")


TYPO_ARGV = {
    "run_distill": ["--train_file", "{d}/corpus.txt", "--output_dir", "out", "--use_cpu", "--max_steps", "2"],
    "run_glue": ["--task_name", "mrpc", "--do_eval", "--output_dir", "out", "--use_cpu"],
    "run_squad": ["--do_eval", "--output_dir", "out", "--use_cpu"],
}
MODEL_FLAG = {"run_distill": "--teacher_name_or_path", "run_glue": "--model_name_or_path",
              "run_squad": "--model_name_or_path"}


@pytest.mark.parametrize("script,flag", [(s, MODEL_FLAG[s]) for s in TYPO_ARGV] + [
    ("run_distill", "--tokenizer_name"), ("run_glue", "--teacher_name_or_path"), ("run_glue", "--tokenizer_name"),
    ("run_squad", "--config_name")])
def test_mistyped_local_folder_is_named_before_any_hub_access(script, flag, data, tmp_path, monkeypatch, capsys):
    """`outputs/quickstrat`, a typo of the folder `outputs/quickstart`, is a local path that does not exist, not the
    Hub repo `quickstrat` of a user called `outputs`: one line at once, no Hub lookup (sockets are blocked here)."""
    import importlib
    import socket

    teacher, d = data
    module = importlib.import_module(f"homodistil_hf.cli.{script}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "quickstart").mkdir(parents=True)

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked for a mistyped local folder")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    argv = [a.format(d=d) for a in TYPO_ARGV[script]]
    if flag != MODEL_FLAG[script]:
        argv += [MODEL_FLAG[script], str(teacher)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(module.main, [flag, "outputs/quickstrat", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {flag} outputs/quickstrat does not exist: pass an existing local model folder (check the "
                   "spelling) or a Hub id such as org/name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # nothing written


def test_local_paths_and_hub_ids(tmp_path, monkeypatch):
    from homodistil_hf.validate import looks_local

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    for hub_id in ("bert-base-uncased", "google-bert/bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2"):
        assert not looks_local(hub_id), hub_id
    for local in ("outputs/quickstrat", "./model", "../model", "/abs/model", "~/model", "a/b/c", "outputs/",
                  r"C:\models\bert", "my model"):
        assert looks_local(local), local


def test_table_is_big_enough():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)
