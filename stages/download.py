"""Stage download: fetch each source archive (mirror first) and extract it into data/raw.

`--section` names another list of sources in params (serving/dvc.yaml's `scene_sources`
stage fetches the external scene sets with it)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from facemask.config import cache_dir, exit_on_error
from facemask.data.download import fetch_source
from facemask.params import Params, Source, load_stage_params, stage_params


def section(params: Params, dotted: str) -> list[Source]:
    """The sources at a dotted params key: a list of sources with names ("data.sources"), or
    a mapping of name to source ("scene_sources")."""
    value = params
    for key in dotted.split("."):
        if not hasattr(value, key) or getattr(value, key) is None:
            raise ValueError(f"params has no {dotted!r} (no key {key!r})")
        value = getattr(value, key)
    if isinstance(value, dict):  # {name: source}, as scene_sources (DVC foreach keys)
        value = [s.model_copy(update={"name": k}) for k, s in value.items()]
    if not isinstance(value, list) or not all(isinstance(s, Source) and s.name for s in value):
        raise ValueError(f"params {dotted!r} must be a list of sources (or name: source)")
    return value


def main(params: Mapping | Params, out: Path, sources: str = "data.sources") -> dict:
    """Fetch and unpack every source listed at params key `sources` into out/<name>."""
    p = stage_params(params, ["download", sources.split(".")[0]])
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for src in section(p, sources):
        name = src.name
        assert name is not None  # section() lets only named sources through
        manifest[name] = fetch_source(src, out / name, cache_dir() / "downloads", p.download)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    parser.add_argument("--section", default="data.sources", help="params key of the sources")
    args = parser.parse_args()
    with exit_on_error("download"):
        params = load_stage_params(args.params, ["download", args.section.split(".")[0]], args.task)
        main(params, args.out, args.section)
