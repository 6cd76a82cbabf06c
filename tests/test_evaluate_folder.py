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
