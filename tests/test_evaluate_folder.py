"""`facemask evaluate`'s library: any folder of class sub-folders, scored like the test split."""

from __future__ import annotations

import shutil

import pytest
import torch

from facemask.evaluation.folder import evaluate_folder
from facemask.models.factory import ModelCard, create_model
from tests.conftest import CLASSES, make_dataset


class Constant(torch.nn.Module):
    """Says with_mask for every picture: accuracy is the with_mask share, known in advance."""

    num_classes = 2

    def forward(self, x):
        return torch.tensor([[3.0, 0.0]]).repeat(len(x), 1)


def test_folder_scores_and_counts(tmp_path):
    root = make_dataset(tmp_path, per_class=6)
    shutil.copy(root / "with_mask" / "with_mask_001.jpg", root / "with_mask" / "again.jpg")
    (root / "unsure").mkdir()
    (root / "unsure" / "a.jpg").write_bytes((root / "with_mask" / "with_mask_002.jpg").read_bytes())
    (root / "without_mask" / "broken.jpg").write_bytes(b"not a jpeg")
    card = ModelCard("x", CLASSES, 32, (0.5,) * 3, (0.5,) * 3)
    table, m = evaluate_folder(Constant(), card, root)
    assert m["n"] == 12 and m["accuracy"] == 0.5  # 6 with, 6 without; the copy counted once
    assert m["copies_removed"] == 1 and m["unreadable"] == 1
    assert m["left_out"] == {"unsure": 1}
    assert (table["predicted"] == "with_mask").all()


def test_folder_class_map_and_errors(tmp_path):
    root = make_dataset(tmp_path, per_class=3)
    card = ModelCard("x", CLASSES, 32, (0.5,) * 3, (0.5,) * 3)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    _, m = evaluate_folder(model, card, root, {"with_mask": "with_mask"})
    assert m["n"] == 3 and m["left_out"] == {"without_mask": 3}
    with pytest.raises(ValueError, match="masked"):
        evaluate_folder(model, card, root, {"with_mask": "masked"})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate_folder(model, card, tmp_path / "nowhere")


def test_cli_evaluate_prints_metrics_and_fails_cleanly(tmp_path, capsys):
    import json

    from facemask.cli import main
    from facemask.models.factory import save_model

    root = make_dataset(tmp_path, per_class=4)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    path = tmp_path / "m.safetensors"
    save_model(model, ModelCard("facemask_cnn", CLASSES, 32, (0.5,) * 3, (0.5,) * 3), path)
    assert main(["evaluate", str(path), str(root), "--predictions", str(tmp_path / "p")]) == 0
    out = json.loads(capsys.readouterr().out)[str(root)]
    assert out["n"] == 8 and out["left_out"] == {}
    assert len((tmp_path / "p" / f"{root.name}.csv").read_text().splitlines()) == 9
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(tmp_path / "bad.safetensors"), str(root)])
    assert exit_.value.code == 2
    assert "bad.safetensors" in capsys.readouterr().err
