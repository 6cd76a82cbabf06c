"""Stage download: fetch each source archive (mirror first) and extract it into data/raw."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from facemask.config import cache_dir, load_params
from facemask.data.download import Fetched, archive_name, extract, fetch, mirror_folders


def fetch_cached(src: dict, dest: Path, dl: dict) -> Fetched:
    """fetch(), unless an earlier run already downloaded this URL completely.

    Only web downloads are reused: local files and mirrors are re-read every time
    (cheap), so an edited local archive is never shadowed by a stale copy.
    """
    sidecar = dest.with_name(dest.name + ".json")
    if dest.is_file() and sidecar.is_file():
        seen = json.loads(sidecar.read_text())
        pinned = src.get("sha256")
        if seen["origin"] == "http" and (not pinned or seen["sha256"] == pinned.lower()):
            return Fetched(dest, seen["sha256"], seen["origin"])
    fetched = fetch(
        src["url"],
        dest,
        sha256=src.get("sha256"),
        mirrors=mirror_folders(),
        retries=dl["retries"],
        timeout=dl["timeout"],
    )
    sidecar.write_text(json.dumps({"sha256": fetched.sha256, "origin": fetched.origin}))
    return fetched


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
        fetched = fetch_cached(src, cache_dir() / "downloads" / key / name, dl)
        # A mirror's copy may be laid out differently from the URL's archive.
        subdir = src.get("subdir")
        if fetched.origin == "mirror" and "mirror_subdir" in src:
            subdir = src["mirror_subdir"]
        extract(fetched.path, out / src["name"], subdir, dl["max_unpacked_bytes"])
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
