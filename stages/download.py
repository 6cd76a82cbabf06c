"""Stage download: fetch each source archive (mirror first) and extract it into data/raw."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facemask.config import cache_dir, load_params
from facemask.data.download import fetch_source


def main(params: dict, out: Path) -> dict:
    """Fetch and unpack every source in params['data']['sources'] into out/<name>."""
    dl = params["download"]
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for src in params["data"]["sources"]:
        manifest[src["name"]] = fetch_source(src, out / src["name"], cache_dir() / "downloads", dl)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    args = parser.parse_args()
    main(load_params(args.params), args.out)
