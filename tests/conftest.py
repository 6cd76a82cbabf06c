"""Shared fixtures: tiny synthetic face-mask images, packed as a downloadable source."""

from __future__ import annotations

import copy
import os
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on two cores: one torch thread per worker, in-process and in the stages
    # and tools a test starts (they inherit the environment). Two workers of two threads each
    # would oversubscribe the cores, which slows torch several-fold.
    os.environ.setdefault("FACEMASK_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (stable otherwise): under `pytest -n 2` the whole-pipeline tests start
    at once, while the other worker takes the many short ones, instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


CLASSES = ["with_mask", "without_mask"]
SUBDIR = "tiny-main/dataset"


def tool_env() -> dict[str, str]:
    """The environment for dvc and git run by tests: this interpreter's folder first on PATH
    (a stage's `python` is the venv's, whatever PATH says), no analytics, a git identity."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        **{f"GIT_{w}_{k}": v for w in ("AUTHOR", "COMMITTER") for k, v in _WHO.items()},
    }


_WHO = {"NAME": "t", "EMAIL": "t@example.com"}


def draw_face(rng: np.random.Generator, masked: bool, size: int = 48) -> Image.Image:
    """A skin-toned oval somewhere on a cluttered background; masks cover the lower face.

    Position, scale and clutter vary enough that no two images are perceptual
    near-duplicates, so the duplicate grouping leaves each image on its own.
    """
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(4):  # background clutter
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 4, size, 2)
        d.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    s = rng.uniform(0.55, 0.85) * size  # face height
    cx, cy = rng.uniform(s * 0.4, size - s * 0.4), rng.uniform(s * 0.5, size - s * 0.5)
    skin = tuple(
        int(v) for v in np.clip(np.array([210, 160, 130]) + rng.integers(-30, 30, 3), 0, 255)
    )
    d.ellipse([cx - 0.38 * s, cy - 0.5 * s, cx + 0.38 * s, cy + 0.5 * s], fill=skin)
    for ex in (cx - 0.15 * s, cx + 0.15 * s):
        d.ellipse([ex - 2, cy - 0.15 * s - 2, ex + 2, cy - 0.15 * s + 2], fill=(30, 30, 30))
    if masked:
        color = [(70, 130, 220), (240, 240, 240), (30, 30, 30), (90, 200, 160)][rng.integers(4)]
        d.rectangle([cx - 0.33 * s, cy + 0.05 * s, cx + 0.33 * s, cy + 0.4 * s], fill=color)
    else:
        d.line(
            [cx - 0.12 * s, cy + 0.25 * s, cx + 0.12 * s, cy + 0.25 * s],
            fill=(150, 50, 50),
            width=2,
        )
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 12, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


FACES = [((10.0, 10.0, 58.0, 58.0), 0.9), ((80.0, 20.0, 128.0, 68.0), 0.6)]


class TwoFaces:
    """A stub detector: the same two face boxes (FACES) in every picture."""

    def __init__(self, **_) -> None:
        pass

    def detect(self, rgb):
        return list(FACES)


def scene(rng: np.random.Generator) -> Image.Image:
    """A 160 x 100 picture with a masked face and a bare face where FACES says."""
    img = Image.new("RGB", (160, 100), (90, 110, 90))
    for k, ((x0, y0, x1, _), _) in enumerate(FACES):
        img.paste(draw_face(rng, k == 0, int(x1 - x0)), (int(x0), int(y0)))
    return img


def make_dataset(folder: Path, per_class: int = 16, seed: int = 0, size: int = 48) -> Path:
    """Class folders of synthetic JPEG/PNG faces under folder/SUBDIR."""
    rng = np.random.default_rng(seed)
    root = folder / SUBDIR
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = draw_face(rng, label == "with_mask", size)
            ext = ".png" if i % 4 == 0 else ".jpg"
            img.save(root / label / f"{label}_{i:03d}{ext}", quality=92)
    return root


def zip_folder(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return zip_path


def tiny_params(zip_path: Path, model: str = "facemask_cnn") -> dict:
    """params.yaml shrunk for tests: one local source, 32 px, a few epochs, no workers."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = copy.deepcopy(params)
    params["model"] = model
    params["classes"] = CLASSES
    params["data"]["sources"] = [
        {
            "name": "tiny",
            "url": str(zip_path),
            "file": None,
            "sha256": None,
            "subdir": SUBDIR,
            "classes": {c: c for c in CLASSES},
        }
    ]
    params["prepare"].update(workers=1, min_side=16)
    params["split"].update(valid=0.25, test=0.25)
    t = params["train"]
    t.update(image_size=32, batch_size=16, pretrained=False)
    t["head"].update(epochs=3, patience=0)
    t["finetune"].update(epochs=1, batch_size=8)
    params["plots"].update(per_cell=2)
    params["evaluate"]["external"] = []  # tests that want one add a tiny synthetic set
    params["card"]["licences"]["tiny"] = "made by the test"  # the model card names it
    params["slices"].update(bootstrap=100, min_count=4)
    params["robustness"].update(sample=12, corruptions=["downscale", "grayscale"])
    return params


def params_with(**sections) -> dict:
    """params.yaml with the named sections' keys replaced (mappings update, values replace)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(params.get(name), dict):
            params[name].update(value)
        else:
            params[name] = value
    return params


def train_params(**overrides):
    """params.yaml's `train` section, typed, with top-level keys replaced."""
    from facemask.params import TrainParams

    train = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    return TrainParams.model_validate({**train, **overrides})


def run_data_stages(params: dict) -> Path:
    """download -> prepare -> split in the current folder, as dvc repro lays them out."""
    from stages import download, prepare, split

    download.main(params, Path("data/raw"))
    prepare.main(
        params,
        Path("data/raw"),
        Path("data/index.csv"),
        Path("data/rejected.csv"),
        Path("metrics/prepare.json"),
        Path("data/crops"),
    )
    split.main(params, Path("data/index.csv"), Path("data/splits"), Path("metrics/split.json"))
    return Path("data/splits")


def workspace_snapshot(root: Path = ROOT) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file and folder under the workspace's pipeline outputs."""
    out = {}
    for top in ("data", "metrics", "models", "plots"):
        for path in (root / top).rglob("*"):
            st = path.lstat()  # one stat per path: ~12,000 of them, twice a session
            size = st.st_size if stat.S_ISREG(st.st_mode) else -1
            out[str(path.relative_to(root))] = (size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session", autouse=True)
def _workspace_untouched():
    """Tests write under tmp_path only. A stage function run with its default, relative
    output paths from the repository root once emptied the real data/crops: fail the session
    if anything under data/, metrics/, models/ or plots/ changed."""
    before = workspace_snapshot()
    yield
    after = workspace_snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"tests changed the workspace: {changed[:10]} ({len(changed)} paths)"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder and no mirrors, so nothing leaks between them."""
    monkeypatch.setenv("FACEMASK_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("FACEMASK_MIRROR", "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def model_file(tmp_path, monkeypatch) -> Path:
    """An untrained two-class facemask_cnn saved to tmp_path, with the stub detector
    TwoFaces registered as `--detector two` and named by the finder file beside the model."""
    from facemask.detection import finders as detect

    monkeypatch.setitem(detect.DETECTORS, "two", TwoFaces)
    return tiny_model(tmp_path)


def tiny_model(folder: Path) -> Path:
    """An untrained two-class facemask_cnn in `folder`, its finder file naming `two`."""
    from facemask.detection.factory import Finder, write_finder
    from facemask.models.factory import ModelCard, create_model, save_model

    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    card = ModelCard("facemask_cnn", CLASSES, 32, (0.5,) * 3, (0.25,) * 3)
    save_model(model, card, folder / "m.safetensors")
    write_finder(folder / "finder.json", Finder(detector="two", chosen_by="tests"))
    return folder / "m.safetensors"


@pytest.fixture
def tiny_zip(tmp_path) -> Path:
    src = tmp_path / "src"
    make_dataset(src)
    return zip_folder(src, tmp_path / "tiny.zip")


@pytest.fixture
def params(tiny_zip) -> dict:
    return tiny_params(tiny_zip)
