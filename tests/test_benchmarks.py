"""Every kept benchmark runs end to end on tiny synthetic data (`--smoke`), and its output
carries figures a broken script would get wrong."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def smoke(script: str, out) -> str:
    """Run `benchmarks/<script> --smoke --out <out>`; its stdout."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in `text`, cells stripped."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r] for r in rows if not set("".join(r)) <= set("-: ")][1:]


def test_dedup_scale_finds_every_planted_copy(tmp_path):
    out = tmp_path / "dedup.md"
    smoke("dedup_scale.py", out)
    rows = {r[0]: r for r in table_rows(out.read_text())}
    assert set(rows) == {"lsh", "all pairs"}
    for method, row in rows.items():
        hashes, found, missed = int(row[1]), int(row[4]), int(row[5])
        assert (hashes, found, missed) == (2000, 100, 0), method  # one in 20 planted, none missed


def test_inference_speed_traced_features_match_eager(tmp_path):
    out = tmp_path / "speed.md"
    smoke("inference_speed.py", out)
    (row,) = table_rows(out.read_text())
    name, eager, traced, speedup, diff = row
    assert name == "mobilenetv2_100"
    assert float(eager) > 0 and float(traced) > 0 and speedup.endswith("x")
    assert float(diff) < 1e-3  # the traced net computes the same features


def test_repro_time_times_each_stage_and_reads_the_runs_metrics(tmp_path):
    out = tmp_path / "repro.md"
    stdout = smoke("repro_time.py", out)
    stages = re.findall(r"^\| (noise|make_data|evaluate) ", stdout, re.M)
    assert sorted(stages) == ["evaluate", "make_data", "noise"]  # each timed once
    assert stages.index("make_data") < stages.index("evaluate")  # dvc repro's order
    assert "test accuracy 75.00 % (n=4)" in stdout and "warm `dvc repro -f`" in stdout
    (row,) = table_rows(out.read_text())
    assert row[0] == "`--whole`: the default"
    assert re.fullmatch(r"\d+ min \d+ s", row[2]) and row[3].endswith(" GB")
    assert row[4] == "75.00 % (n=4)"  # from the clone's own metrics/test.json: 3 of 4
    # make_data repeats byte for byte, noise cannot; evaluate writes a report only
    assert row[5] == "1 equal, differ: noise"


def test_finders_puts_candidates_side_by_side(tmp_path):
    out = tmp_path / "finders.md"
    smoke("finders.py", out)
    rows = {r[0]: r for r in table_rows(out.read_text())}
    assert set(rows) == {"every", "none"}
    every, none = rows["every"], rows["none"]
    assert every[1] == none[1] == "tiny" and int(every[2]) > 0  # labelled faces counted
    assert float(every[3]) == 1.0 and float(none[3]) == 0.0  # recall: all found, none found
    assert float(none[8]) == 0.0  # mAP of a finder that finds nothing


def test_crop_check_counts_the_non_face_pictures_it_lets_through(tmp_path):
    stdout = smoke("crop_check.py", tmp_path / "cc.md")
    (row,) = table_rows(stdout)
    through, total = (int(v) for v in row[1].split(" / "))
    assert total == 40 and through <= 4  # the real CenterFace net: most non-faces refused
    assert not (tmp_path / "cc.md").exists()  # --smoke writes no result


def test_box_mapping_moves_a_planted_offset_back(tmp_path):
    out = tmp_path / "bm.md"
    smoke("box_mapping.py", out)
    text = out.read_text()
    rows = {r[1]: r for r in table_rows(text)}
    assert float(rows["as found"][3]) < 0.5 < 0.95 < float(rows["mapped"][3])  # mean IoU
    assert (rows["as found"][4], rows["mapped"][4]) == ("0", "1")  # faces at IoU 0.5
    moved = dict(re.findall(r"(x0|y0|x1|y1) ([+-]\d\.\d+)", text))
    assert abs(float(moved["y0"]) - 0.4) < 0.02 and abs(float(moved["x0"])) < 0.02
    assert "gains on every set" in text
