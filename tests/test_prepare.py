"""The index: every good image in, every bad file out with a reason, duplicates grouped."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facemask.data.prepare import Source, build_index
from stages import prepare
from tests.conftest import CLASSES, draw_face, make_dataset, tiny_params


def dataset_with_problems(tmp_path):
    root = make_dataset(tmp_path, per_class=6)
    wm, wo = root / "with_mask", root / "without_mask"
    shutil.copy(wm / "with_mask_001.jpg", wm / "copy_of_001.jpg")  # exact duplicate
    with Image.open(wm / "with_mask_002.jpg") as img:  # near duplicate: resized + recompressed
        img.resize((40, 40)).save(wm / "smaller_002.jpg", quality=70)
    shutil.copy(wm / "with_mask_003.jpg", wo / "mislabelled_003.jpg")  # same picture, other label
    (wo / "empty.jpg").write_bytes(b"")
    (wo / "notes.txt").write_text("not an image")
    draw_face(np.random.default_rng(9), False, 12).save(wo / "tiny.png")
    (root / "unused_folder").mkdir()
    return root


def test_build_index_groups_rejects_and_reports(tmp_path):
    root = dataset_with_problems(tmp_path)
    index, rejected, report = build_index(
        [Source("s", root, {"with_mask": "with_mask", "without_mask": "without_mask"})],
        min_side=16,
        hash_size=16,
        near_duplicate_distance=20,
        workers=1,
    )
    by_name = index.set_index(index["path"].str.rsplit("/", n=1).str[1])
    assert by_name.loc["copy_of_001.jpg", "group"] == by_name.loc["with_mask_001.jpg", "group"]
    assert by_name.loc["smaller_002.jpg", "group"] == by_name.loc["with_mask_002.jpg", "group"]
    assert by_name.loc["with_mask_004.png", "group"] != by_name.loc["with_mask_005.jpg", "group"]

    reasons = dict(
        zip(rejected["path"].str.rsplit("/", n=1).str[1], rejected["reason"], strict=True)
    )
    assert "empty" in reasons["empty.jpg"]
    assert "notes.txt" in reasons and "suffix '.txt'" in reasons["notes.txt"]
    assert reasons["tiny.png"].startswith("too small")
    # the conflicting pair is dropped, both copies, and said why
    assert "conflicting labels" in reasons["mislabelled_003.jpg"]
    assert "conflicting labels" in reasons["with_mask_003.jpg"]
    assert "with_mask_003.jpg" not in by_name.index

    assert report["exact_duplicate_groups"] == 1 and report["exact_duplicate_extra_files"] == 1
    assert report["conflicting_label_groups_dropped"] == 1
    assert report["unmapped_folders"] == {"s": ["unused_folder"]}
    assert report["images_indexed"] == len(index) == 12 + 2 - 1
    assert report["files_rejected"] == len(rejected) == 5
    assert set(index["label"]) == {"with_mask", "without_mask"}
    assert index["path"].is_monotonic_increasing


def test_prepare_stage_twice_gives_identical_bytes(tmp_path, monkeypatch):
    root = dataset_with_problems(tmp_path / "x")
    raw = tmp_path / "raw"
    shutil.copytree(root, raw / "tiny")
    params = tiny_params(tmp_path / "unused.zip")
    outs = []
    for run in ("a", "b"):
        files = [tmp_path / run / n for n in ("index.csv", "rejected.csv", "report.json")]
        prepare.main(params, raw, *files, tmp_path / run / "crops")
        outs.append([f.read_bytes() for f in files])
    assert outs[0] == outs[1]
    assert pd.read_csv(tmp_path / "a" / "index.csv").columns[0] == "path"


def test_prepare_refuses_class_outside_classes(tmp_path):
    params = tiny_params(tmp_path / "unused.zip")
    params["data"]["sources"][0]["classes"] = {"with_mask": "masked"}
    try:
        outs = (tmp_path / n for n in ("i.csv", "r.csv", "p.json", "crops"))
        prepare.main(params, tmp_path, *outs)
    except ValueError as err:
        assert "masked" in str(err) and "tiny" in str(err)
    else:
        raise AssertionError("a class outside params.classes must be refused")


def test_no_files_found_is_an_error_naming_the_folders(tmp_path):
    (tmp_path / "wrong_level" / "with_mask").mkdir(parents=True)
    try:
        build_index([Source("s", tmp_path, {"with_mask": "with_mask"})], workers=1)
    except ValueError as err:
        assert "wrong_level" in str(err)
    else:
        raise AssertionError("an empty index must be an error")


def test_group_by_person_keeps_one_persons_photos_together(tmp_path):
    rng = np.random.default_rng(5)
    (tmp_path / "m").mkdir()
    for person in range(4):
        for shot in range(3):  # different pictures of one person
            draw_face(rng, True, 48).save(tmp_path / "m" / f"p{person}_{shot}.jpg", quality=95)
    src = Source("s", tmp_path, {"m": "with_mask"}, attributes=r"^p(?P<person>\d+)_")
    common = dict(min_side=16, near_duplicate_distance=-1, workers=1)
    index, _, report = build_index([src], group_by=["person"], **common)
    assert index.groupby("attr_person")["group"].nunique().eq(1).all()
    assert index["group"].nunique() == 4 and report["split_groups"] == 4
    plain, _, _ = build_index([src], **common)
    assert plain["group"].nunique() == 12  # without group_by every picture is its own unit
    try:
        build_index([src], group_by=["identity"], **common)
    except ValueError as err:
        assert "identity" in str(err) and "person" in str(err)
    else:
        raise AssertionError("an unknown group_by attribute must be refused")


def test_workspace_guard_sees_an_emptied_output_folder(tmp_path):
    """The session guard (conftest) compares these snapshots: emptying data/crops, as a
    prepare run from the repository root once did, must show."""
    from tests.conftest import workspace_snapshot

    (tmp_path / "data" / "crops").mkdir(parents=True)
    (tmp_path / "data" / "crops" / "a.png").write_bytes(b"x")
    before = workspace_snapshot(tmp_path)
    prepare_out = tmp_path / "data" / "crops"
    shutil.rmtree(prepare_out)
    prepare_out.mkdir()
    after = workspace_snapshot(tmp_path)
    assert "data/crops/a.png" in before and "data/crops/a.png" not in after
    assert before != after


@pytest.mark.slow
def test_prepare_on_a_dask_cluster_gives_the_local_index(tmp_path):
    """Two Dask worker processes started here (a LocalCluster on loopback) do the per-file
    work; the index, rejections and report are the local run's."""
    distributed = pytest.importorskip("distributed")
    from tests.test_voc import CLASSES as VOC_CLASSES
    from tests.test_voc import make_voc

    sources = [
        Source("s", dataset_with_problems(tmp_path / "f"), {c: c for c in CLASSES}),
        Source("v", make_voc(tmp_path / "voc"), VOC_CLASSES, format="voc"),
    ]
    common = dict(min_side=16, hash_size=16, near_duplicate_distance=20, min_box=16)
    local = build_index(sources, crops_dir=tmp_path / "crops_local", workers=1, **common)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:  # fmt: skip
        on_cluster = build_index(
            sources, crops_dir=tmp_path / "crops_dask", workers=cluster.scheduler_address,
            **common,
        )  # fmt: skip
        done = cluster.scheduler.task_prefixes["apply"].state_counts  # _apply: ran there
    assert done["memory"] >= 2, done  # tasks that finished on a worker
    index_l, index_d = (i.assign(path=i["path"].str.replace(r"crops_\w+", "C", regex=True))
                        for i in (local[0], on_cluster[0]))  # fmt: skip
    assert len(index_l) > 30 and index_l["scene"].notna().any()  # both sources are in it
    pd.testing.assert_frame_equal(index_l, index_d)
    pd.testing.assert_frame_equal(local[1], on_cluster[1])
    assert local[2] == on_cluster[2]


def test_an_unreachable_cluster_is_named(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("facemask.data.parallel.CONNECT_TIMEOUT", "1s")
    root = make_dataset(tmp_path, per_class=2)
    src = Source("s", root, {c: c for c in CLASSES})
    with pytest.raises(RuntimeError, match=r"no Dask scheduler at 'tcp://127\.0\.0\.1:9'"):
        build_index([src], min_side=16, workers="tcp://127.0.0.1:9")
