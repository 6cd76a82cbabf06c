"""Stage download: fetch each source archive (mirror first) and extract it into data/raw.

`--section` names another list of sources in params (serving/dvc.yaml's `scene_sources`
stage fetches the external scene sets with it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facemask.config import cache_dir, exit_on_error, load_params
from facemask.data.download import fetch_source


def section(params: dict, dotted: str) -> list[dict]:
    """The sources at a dotted params key: a list of sources with names ("data.sources"), or
    a mapping of name to source ("scene_sources")."""
    value = params
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"params has no {dotted!r} (no key {key!r})")
        value = value[key]
    if isinstance(value, dict):  # {name: source}, as scene_sources (DVC foreach keys)
        value = [{"name": k, **v} if isinstance(v, dict) else v for k, v in value.items()]
    if not isinstance(value, list) or not all(isinstance(s, dict) and "name" in s for s in value):
        raise ValueError(f"params {dotted!r} must be a list of sources (or name: source)")
    return value


def main(params: dict, out: Path, sources: str = "data.sources") -> dict:
    """Fetch and unpack every source listed at params key `sources` into out/<name>."""
    dl = params["download"]
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for src in section(params, sources):
        manifest[src["name"]] = fetch_source(src, out / src["name"], cache_dir() / "downloads", dl)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    parser.add_argument("--section", default="data.sources", help="params key of the sources")
    args = parser.parse_args()
    with exit_on_error("download"):
        main(load_params(args.params), args.out, args.section)
