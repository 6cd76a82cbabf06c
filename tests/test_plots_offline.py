"""`dvc plots show` / `dvc plots diff` pages draw with no network: .dvc/config points DVC at a
page template that inlines the vendored Vega bundles (vendor/vega/)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from configobj import ConfigObj
from PIL import Image

from tests.conftest import ROOT

VENDOR = ROOT / "vendor" / "vega"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1200, 1200)  # px, CSS = screen: --force-device-scale-factor=1

# Appended to a rendered page: the box of every chart vega-embed drew, for --dump-dom.
PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const marks = document.querySelectorAll(".vega-embed canvas, .vega-embed svg.marks");
  const boxes = [...marks].map(e => { const r = e.getBoundingClientRect();
    return [r.left, r.top, r.width, r.height]; });
  document.body.setAttribute("data-plot-boxes", JSON.stringify(boxes));
}, 500));
</script>"""


def project_template() -> tuple[str, Path]:
    """plots.html_template as .dvc/config says it, and the file DVC resolves it to."""
    value = ConfigObj(str(ROOT / ".dvc" / "config"))["plots"]["html_template"]
    return value, (ROOT / ".dvc" / value).resolve()


def test_config_points_at_a_template_that_inlines_the_vendored_bundles():
    _, template = project_template()
    assert template == VENDOR / "plots.html"
    page = template.read_text(encoding="utf-8")
    assert "{plot_divs}" in page
    assert "{scripts}" not in page  # DVC would put its CDN <script src=...> tags there
    assert not re.search(r"<(script|link)[^>]*\b(src|href)=", page)  # nothing fetched
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    assert set(manifest) == {"vega", "vega-lite", "vega-embed"}
    for name, entry in manifest.items():
        js = (VENDOR / entry["file"]).read_bytes()
        assert hashlib.sha256(js).hexdigest() == entry["sha256"], f"{name} changed by hand"
        assert js.decode("utf-8") in page, "plots.html is stale: run vendor/vega/update.py"
        assert entry["version"] in page  # named in the page's notice
        assert "Redistribution" in (VENDOR / f"LICENSE-{name}").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{cmd}: {done.stderr[-2000:]}"
    return done.stdout


def dvc(repo: Path, *args: str) -> str:
    return run(sys.executable, "-m", "dvc", *args, cwd=repo)


def make_repo(root: Path) -> Path:
    """A throw-away git + DVC repo with two plots (a line, a confusion matrix), the project's
    plots.html_template setting and the template at the place that setting resolves to."""
    repo = root / "repo"
    repo.mkdir()
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false")
    run("git", "init", "-q", cwd=repo)
    dvc(repo, "init", "-q")
    value, template = project_template()
    (repo / ".dvc" / value).resolve().parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, (repo / ".dvc" / value).resolve())
    dvc(repo, "config", "plots.html_template", value)
    (repo / "history.csv").write_text("step,loss\n1,0.9\n2,0.6\n3,0.4\n4,0.35\n")
    (repo / "preds.csv").write_text("actual,predicted\na,a\na,b\nb,b\nb,b\n")
    (repo / "dvc.yaml").write_text(
        "plots:\n"
        "  - history.csv:\n      x: step\n      y: loss\n"
        "  - confusion:\n      template: confusion\n      x: actual\n"
        "      y:\n        preds.csv: predicted\n"
    )
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-q", "-m", "first", cwd=repo)
    (repo / "history.csv").write_text("step,loss\n1,0.8\n2,0.5\n3,0.3\n4,0.2\n")
    return repo


def chromium(page: Path, profile: Path, *args: str) -> str:
    """Headless Chromium on `page` with every network request failing."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=10000",  # ms of page time: scripts and rendering finish first
        f"--user-data-dir={profile}",
        # No network: requests go to a proxy that is not there, and no host name resolves.
        f"--proxy-server=127.0.0.1:{free_port()}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def drawn_plots(out: Path, work: Path) -> tuple[list[list[float]], np.ndarray]:
    """Boxes of the charts on the rendered page `out`/index.html, and its screenshot."""
    page = (out / "index.html").read_text(encoding="utf-8")
    head, tail = page.rsplit("</body>", 1)  # the last one: the bundles hold "</body>" strings
    probe = out / "probe.html"
    probe.write_text(head + PROBE + "</body>" + tail, encoding="utf-8")
    dom = chromium(probe, work / "profile", "--dump-dom")
    boxes = json.loads(re.search(r'data-plot-boxes="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    shot = work / f"{out.name}.png"
    chromium(probe, work / "profile", f"--screenshot={shot}")
    return boxes, np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)


def coloured_pixels(image: np.ndarray, box: list[float]) -> int:
    """Pixels in `box` with a clear hue: data marks; axes, text and background are grey."""
    left, top, width, height = (round(v) for v in box)
    crop = image[top : top + height, left : left + width]
    return int(((crop.max(-1) - crop.min(-1)) > 60).sum())


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium for the headless screenshot: apt-get install -y chromium",
)
def test_plots_show_and_diff_draw_every_plot_offline(tmp_path):
    repo = make_repo(tmp_path)
    dvc(repo, "plots", "show", "-o", str(tmp_path / "show"))
    dvc(repo, "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    for name in ("show", "diff"):
        boxes, image = drawn_plots(tmp_path / name, tmp_path)
        assert len(boxes) == 2, f"dvc plots {name}: {len(boxes)} of 2 plots drawn"
        for box in boxes:
            assert box[2] > 100 and box[3] > 100
            assert box[0] + box[2] <= WINDOW[0] and box[1] + box[3] <= WINDOW[1]  # on screen
            assert coloured_pixels(image, box) > 50, f"dvc plots {name}: a plot is blank"
    assert "HEAD" in (tmp_path / "diff" / "index.html").read_text()  # two revisions compared

    # The control: DVC's own page loads Vega from a CDN, and draws nothing here.
    dvc(repo, "config", "--unset", "plots.html_template")
    dvc(repo, "plots", "show", "-o", str(tmp_path / "cdn"))
    assert "cdn.jsdelivr.net" in (tmp_path / "cdn" / "index.html").read_text()
    boxes, image = drawn_plots(tmp_path / "cdn", tmp_path)
    assert boxes == []
    assert coloured_pixels(image, [0, 0, *WINDOW]) == 0
