"""Stage download: fetch each source archive (mirror first) and extract it into data/raw."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from facemask.config import cache_dir, load_params
from facemask.download import archive_name, extract, fetch, mirror_folders


def main(params: dict, out: Path) -> dict:
    """Fetch and unpack every source in params['data']['sources'] into out/<name>."""
    dl = params["download"]
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for src in params["data"]["sources"]:
        name = archive_name(src["url"], src.get("file"))
        # Archives are kept in the user cache, keyed by URL, not in data/raw: DVC
        # would store every archive next to its extracted copy, doubling the remote.
        key = hashlib.sha256(src["url"].encode()).hexdigest()[:16]
        fetched = fetch(
            src["url"],
            cache_dir() / "downloads" / key / name,
            sha256=src.get("sha256"),
            mirrors=mirror_folders(),
            retries=dl["retries"],
            timeout=dl["timeout"],
        )
        extract(fetched.path, out / src["name"], src.get("subdir"), dl["max_unpacked_bytes"])
        manifest[src["name"]] = {
            "url": src["url"],
            "file": name,
            "sha256": fetched.sha256,
            "origin": fetched.origin,
        }
        print(f"{src['name']}: {name} ({fetched.origin}) sha256 {fetched.sha256}")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    args = parser.parse_args()
    main(load_params(args.params), args.out)
