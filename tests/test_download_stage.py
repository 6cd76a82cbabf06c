"""The download stage: web downloads are reused, a mirror copy may have its own layout."""

from __future__ import annotations

import json

from stages import download
from tests.conftest import SUBDIR, make_dataset, tiny_params, zip_folder
from tests.test_download import server  # noqa: F401 - pytest fixture


def test_web_download_is_fetched_once(tmp_path, tiny_zip, server):  # noqa: F811
    base, behaviour, _ = server
    behaviour.data = tiny_zip.read_bytes()
    params = tiny_params(tiny_zip)
    params["data"]["sources"][0]["url"] = f"{base}/tiny.zip"
    for run in ("a", "b"):
        manifest = download.main(params, tmp_path / run)
        assert manifest["tiny"]["origin"] == "http"
        assert len(list((tmp_path / run / "tiny" / "with_mask").iterdir())) == 16
    assert behaviour.requests == [None]  # the second run used the cached archive


def test_mirror_copy_uses_mirror_subdir(tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    make_dataset(flat)  # the mirror holds the class folders at its top level
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    zip_folder(flat / SUBDIR, mirror / "tiny-mirror.zip")
    monkeypatch.setenv("FACEMASK_MIRROR", str(mirror))
    params = tiny_params(tmp_path / "nowhere.zip")
    src = params["data"]["sources"][0]
    src.update(url="https://example.invalid/tiny.zip", file="tiny-mirror.zip", mirror_subdir="")
    manifest = download.main(params, tmp_path / "raw")
    assert manifest["tiny"]["origin"] == "mirror"
    assert sorted(p.name for p in (tmp_path / "raw" / "tiny").iterdir()) == [
        "with_mask",
        "without_mask",
    ]
    saved = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert saved["tiny"]["file"] == "tiny-mirror.zip"


def test_scene_sources_section_fetches_a_box_csv_set(tmp_path, monkeypatch):
    """`--section scene_sources`: a scene set zipped in dataroots' layout unpacks to a folder
    the scenes readers take as it is."""
    import pytest

    from facemask.data.scenes import list_scenes
    from tests.test_scene_formats import voc_boxes, write_csv
    from tests.test_voc import make_voc

    voc = make_voc(tmp_path / "voc", n_scenes=2)
    top = tmp_path / "repo" / "tutorial-abc"
    write_csv(top, voc_boxes(voc), voc / "images")
    (top / "data" / "raw_images").unlink()  # a real folder in the archive, not a link
    (top / "data" / "raw_images").mkdir()
    for p in (voc / "images").iterdir():
        (top / "data" / "raw_images" / p.name).write_bytes(p.read_bytes())
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    zip_folder(tmp_path / "repo", mirror / "scenes.zip")
    monkeypatch.setenv("FACEMASK_MIRROR", str(mirror))
    params = tiny_params(tmp_path / "nowhere.zip")
    params["scene_sources"] = {
        "street": {"url": "https://example.invalid/scenes.zip", "file": "scenes.zip",
                   "sha256": None, "subdir": "tutorial-abc/data", "format": "csv"}
    }  # fmt: skip
    manifest = download.main(params, tmp_path / "scenes", "scene_sources")
    assert list(manifest) == ["street"] and manifest["street"]["origin"] == "mirror"
    scenes, bad = list_scenes(tmp_path / "scenes" / "street", fmt="csv")
    assert bad == [] and sum(len(s.boxes) for s in scenes) == 6
    with pytest.raises(ValueError, match=r"no 'scene_sources\.x'"):
        download.main(params, tmp_path / "other", "scene_sources.x")
    params["scene_sources"] = ["street"]
    with pytest.raises(ValueError, match="scene_sources: Input should be a valid dictionary"):
        download.main(params, tmp_path / "other", "scene_sources")
