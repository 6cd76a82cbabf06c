"""Typed params: every section of params.yaml is checked, and a bad value stops its stage."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from facemask.params import (
    SECTIONS,
    ConfigError,
    Params,
    load_stage_params,
    stage_params,
    validate_all,
)
from tests.conftest import ROOT

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
MAPPINGS = [k for k, v in RAW.items() if isinstance(v, dict)]

# One out-of-range or wrong-type value per section: (dotted key, value, what the error says).
BAD = [
    ("seed", -1, "greater than or equal to 0"),
    ("model", "", "at least 1 character"),
    ("classes", ["with_mask", "with_mask"], "distinct"),
    ("data.sources", [], "at least 1 item"),
    ("download.timeout", 0, "greater than 0"),
    ("prepare.near_duplicate_distance", -2, "greater than or equal to -1"),
    ("split.valid", 0.9, "valid + test must be < 1"),
    ("train.head.lr", "1e-3", "valid number"),
    ("train.finetune.schedule", "linear", "'cosine' or 'onecycle'"),
    ("launch.processes", 0, "greater than or equal to 1"),
    ("evaluate.abstain", 1.5, "less than or equal to 1"),
    ("slices.min_count", 0, "greater than or equal to 1"),
    ("robustness.corruptions", [], "at least 1 item"),
    ("plots.cam_method", "gradcamm", "'gradcam'"),
    ("explain.occlusion.patch", 0, "greater than 0"),
    ("audit.folds", 1, "0 (off) or at least 2"),
    ("cv.folds", 1, "greater than or equal to 2"),
    ("compare.modes", ["frozen", "thawed"], "'frozen' or 'finetune'"),
    ("compare_joined.repeats", 0, "greater than or equal to 1"),
    ("scenes.size_bins", [32, 16], "size_bins must increase"),
    ("scene_sources.dataroots.format", "xml", "'voc', 'yolo', 'coco' or 'csv'"),
    ("export.tolerance", -1e-4, "greater than 0"),
    ("detect.operating_points", [0.5, 0.3], "must increase"),
    ("fcos.channels", 48, "multiple of 32"),
    ("fusion.scales", [], "at least 1 item"),
    ("synthesize.masks_per_face", -1, "greater than or equal to 0"),
    ("tasks.three_class", 5, "valid dictionary"),
    ("card.out_of_scope", [], "at least 1 item"),
    ("crop_check.threshold", 1.5, "less than or equal to 1"),
    ("finder.scales", [], "at least 1 item"),
    ("finder.tile", 8, "greater than or equal to 64"),
]


def with_value(raw: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


def test_the_repository_params_file_is_valid_and_every_section_is_typed():
    params = validate_all(RAW, "params.yaml")
    assert set(RAW) == set(SECTIONS)  # a section the schema lacks would go unchecked
    assert params.train.finetune.augment.scale == [0.85, 1.0]
    assert params.scene_sources["dataroots"].format == "csv"


def test_every_section_has_a_bad_value_case():
    assert {key.split(".")[0] for key, _, _ in BAD} == set(SECTIONS)


@pytest.mark.parametrize("section", MAPPINGS)
def test_a_misspelled_key_in_any_section_is_refused_by_name(section):
    # scene_sources maps names to sources, tasks names to overlays: a typo sits inside one
    where = {"scene_sources": "scene_sources.dataroots", "tasks": "tasks.three_class"}
    where = where.get(section, section)
    raw = with_value(RAW, f"{where}.zz_typo", 1)
    with pytest.raises(ConfigError) as err:
        stage_params(raw, [section], "params.yaml")
    text = str(err.value)
    if section == "tasks":  # an overlay's keys are sections
        assert text.startswith("params.yaml: tasks: three_class.zz_typo: unknown section")
    else:
        assert text.startswith(f"params.yaml: {where}.zz_typo: unknown key (allowed here: ")
    assert "\n" not in text


def test_a_task_reads_the_sections_with_its_overlay_on_top(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(RAW))
    three = load_stage_params(path, ["classes", "train", "model"], "three_class")
    assert three.classes == ["with_mask", "without_mask", "mask_worn_incorrectly"]
    assert three.train.image_size == 160  # the overlay's
    assert three.train.head.lr == RAW["train"]["head"]["lr"]  # the rest: the default's
    assert load_stage_params(path, ["classes"], "binary").classes == RAW["classes"]
    with pytest.raises(ConfigError, match=r"no task 'three' under tasks \(tasks: binary, three"):
        load_stage_params(path, ["classes"], "three")
    # a typo deep inside an overlay stops the task's stage, by name
    bad = with_value(RAW, "tasks.three_class.train.imgae_size", 96)
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"train\.imgae_size: unknown key"):
        load_stage_params(path, ["train"], "three_class")
    load_stage_params(path, ["train"], "binary")  # the default task does not read it


@pytest.mark.parametrize(("key", "value", "says"), BAD, ids=[b[0] for b in BAD])
def test_an_out_of_range_value_in_any_section_is_refused_by_name(key, value, says):
    section = key.split(".")[0]
    with pytest.raises(ConfigError) as err:
        stage_params(with_value(RAW, key, value), [section], "params.yaml")
    text = str(err.value)
    assert text.startswith("params.yaml: ") and says in text, text
    assert key.split(".")[-1] in text or section in text


def test_nested_lists_name_the_item_and_list_what_is_allowed():
    raw = copy.deepcopy(RAW)
    raw["data"]["sources"][1]["fromat"] = "voc"
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.fromat: unknown key .*format"):
        stage_params(raw, ["data"])


def test_a_stage_checks_only_its_own_sections():
    raw = with_value(RAW, "export.tolerance", -1)  # broken, but not the train stage's business
    assert stage_params(raw, ["seed", "train"]).train.image_size == RAW["train"]["image_size"]
    with pytest.raises(ConfigError, match="missing section"):
        stage_params({"seed": 1}, ["seed", "train"])
    with pytest.raises(ConfigError, match=r"unknown section 'trian'"):
        stage_params({**RAW, "trian": {}}, ["seed"])


def test_no_second_defaults_a_missing_key_is_an_error():
    raw = copy.deepcopy(RAW)
    del raw["train"]["calibration_views"]
    with pytest.raises(ConfigError, match=r"train\.calibration_views: missing"):
        stage_params(raw, ["train"])


def test_tune_offset_names_one_of_the_classes():
    raw = with_value(RAW, "train.tune_offset", "mask_worn_incorrectly")  # binary classes
    with pytest.raises(ConfigError, match=r"train\.tune_offset: 'mask_worn_incorrectly' is not"):
        stage_params(raw, ["classes", "train"])
    ok = with_value(RAW, "train.tune_offset", "without_mask")
    assert stage_params(ok, ["classes", "train"]).train.tune_offset == "without_mask"


def test_typed_params_cannot_be_changed_after_the_check():
    params = stage_params(RAW, ["train"])
    with pytest.raises(Exception, match="frozen"):
        params.train.image_size = 1
    assert isinstance(stage_params(params, ["train"]), Params)  # passes through, not rebuilt


def test_a_stage_run_on_a_bad_params_file_exits_with_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(with_value(RAW, "train.head.lrr", 0.1)))
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "stages.train", str(tmp_path), "--params", str(bad),
         "--model-out", str(out / "m.safetensors"), "--live", str(out / "live")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert f"train: error: {bad}: train.head.lrr: unknown key" in run.stderr
    assert not out.exists()  # nothing written, nothing lost
