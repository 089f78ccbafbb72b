"""The main job on the user's own model and data: factory, torchvision, Hugging Face folders, image folders and text files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from pruneaware.cli.main import main
from tests.byo_helpers import write_corpus, write_factory, write_hf_folder, write_image_folder, write_jsonl, write_recipe


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["run", *args])
    return code, capsys.readouterr().err


def _steps(out: Path, phase: str) -> list[dict[str, str]]:
    with open(out / phase / "steps.csv") as stream:
        return list(csv.DictReader(stream))


def test_factory_model_on_factory_data_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    module = write_factory(tmp_path, "user_code_a")
    out = tmp_path / "run"
    code, err = _run([str(write_recipe(tmp_path)), "--model", f"{module}:make_model", "--data", f"{module}:make_data", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruned"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert summary["dense"]["parameters"] == 6 * 16 + 16 + 16 * 3 + 3  # num_classes=3 came from the factory data
    rows = _steps(out, "pruned")
    assert [int(row["step"]) for row in rows] == list(range(1, 17))  # 64 samples / batch 8 x 2 epochs, every step
    assert float(rows[-1]["sparsity"]) == pytest.approx(0.5, abs=0.01) and float(rows[0]["target_sparsity"]) < 0.5
    assert {int(row["parameters"]) for row in rows} == {summary["pruned"]["parameters"]}
    assert int(rows[0]["macs"]) > 0 and float(rows[0]["lr"]) > float(rows[-1]["lr"])  # cosine schedule
    assert list((out / "tensorboard" / "pruned").glob("events.out.tfevents.*"))
    assert "| test accuracy |" in (out / "report.md").read_text()


def test_torchvision_model_on_a_generated_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = write_image_folder(tmp_path / "images", classes=3, per_class=5)
    recipe = write_recipe(tmp_path, epochs=1, batch_size=4, data_options={"image_size": 32, "val_fraction": 0.2})
    out = tmp_path / "run"
    code, err = _run([recipe.as_posix(), "--model", "torchvision:mobilenet_v3_small", "--data", str(images), "--no-dense", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruned"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert torch.load(out / "pruned_model.pt")["classifier.3.weight"].shape[0] == 3  # num_classes from the folder


def test_hugging_face_causal_lm_on_a_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_hf_folder(tmp_path / "llama", "causal_lm")
    corpus = write_corpus(tmp_path / "corpus.txt")
    recipe = write_recipe(tmp_path, epochs=2, batch_size=4, data_options={"block_size": 16})
    out = tmp_path / "run"
    code, err = _run([str(recipe), "--model", str(folder), "--data", str(corpus), "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruned"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert 1 < summary["dense"]["perplexity"] < 16  # below a uniform guess over the 16-word vocabulary
    assert "| test perplexity |" in (out / "report.md").read_text()


@pytest.mark.parametrize("kind", ["classification", "embedding"])
def test_hugging_face_encoder_on_jsonl_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    folder = write_hf_folder(tmp_path / "bert", kind)
    rows = write_jsonl(tmp_path / "rows.jsonl")
    recipe = write_recipe(tmp_path, epochs=1, batch_size=8, data_options={"max_length": 10})
    out = tmp_path / "run"
    code, err = _run([str(recipe), "--model", str(folder), "--data", str(rows), "--no-dense", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())["pruned"]
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    if kind == "classification":
        assert 0 <= summary["accuracy"] <= 1
    else:  # pruned encoder against the embeddings of the encoder it started from
        assert 0 < summary["cosine"] < 1


def test_pretrained_weights_are_loaded_and_misfits_are_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    module = write_factory(tmp_path, "user_code_b")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    model = importlib.import_module(module).make_model(3)
    with torch.no_grad():
        model[0].weight.fill_(0.25)
    save_file(model.state_dict(), tmp_path / "start.safetensors")
    torch.save({"state_dict": {"extra.weight": torch.zeros(1), **model.state_dict()}}, tmp_path / "extra.pt")
    recipe = write_recipe(tmp_path, epochs=1, lr=1e-12, dense_baseline=True, model=f"{module}:make_model", dataset=f"{module}:make_data")
    out = tmp_path / "run"
    assert _run([str(recipe), "--weights", "start.safetensors", "--epochs", "1", "--out", str(out)], capsys)[0] == 0
    assert torch.allclose(torch.load(out / "dense_model.pt")["0.weight"], torch.full((16, 6), 0.25), atol=1e-6)
    code, err = _run([str(recipe), "--weights", "extra.pt", "--out", str(tmp_path / "other")], capsys)
    assert code == 2 and "extra.pt" in err and "unexpected: extra.weight" in err


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda tmp: ["--model", "no_such_module_xyz:build"], "importing 'no_such_module_xyz' failed with ModuleNotFoundError"),
        (lambda tmp: ["--model", "user_code_c:wrong_model"], "logits of shape (batch, 3)"),
        (lambda tmp: ["--model", "torchvision:resnet18", "--data", str((tmp / "empty").mkdir() or tmp / "empty")], "one subfolder of images per class"),
        (lambda tmp: ["--model", "torchvision:no_such_net"], "torchvision:no_such_net"),
        (lambda tmp: ["--data", str(tmp / "missing.csv")], "missing.csv"),
        (lambda tmp: ["--device", "tpu"], "train.device"),
    ],
    ids=["import", "output-shape", "empty-image-folder", "torchvision-name", "missing-file", "device"],
)
def test_bad_inputs_fail_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], setup, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    module = write_factory(tmp_path, "user_code_c")
    recipe = write_recipe(tmp_path, model=f"{module}:make_model", dataset=f"{module}:make_data")
    code, err = _run([str(recipe), *setup(tmp_path), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert expected in err
    assert not (tmp_path / "run").exists()  # nothing started


def test_text_too_short_for_one_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_hf_folder(tmp_path / "llama", "causal_lm")
    (tmp_path / "short.txt").write_text("the cat sat on the mat")
    recipe = write_recipe(tmp_path, data_options={"block_size": 16})
    code, err = _run([str(recipe), "--model", str(folder), "--data", str(tmp_path / "short.txt"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "at least 32 tokens" in err and "it has 6 tokens" in err
