"""Ready-made task presets (class set + sources), merged into params.yaml."""

from __future__ import annotations

import os
from pathlib import Path

from ruamel.yaml import YAML

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def list_presets(folder: Path = PRESETS) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def merge(base: dict, overlay: dict) -> dict:
    """Deep-merge `overlay` into `base` in place: mappings merge, everything else replaces."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def apply_preset(
    name: str, params: str | os.PathLike = "params.yaml", folder: Path = PRESETS
) -> dict:
    """Write preset `name` into the params file, keeping its comments and order."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no preset {name!r}; choose from {', '.join(list_presets(folder))}")
    yaml = YAML()  # round-trip: comments in params.yaml survive
    yaml.width = 4096
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own list style
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    data = yaml.load(Path(params).read_text())
    merge(data, yaml.load(path.read_text()))
    with open(params, "w") as f:
        yaml.dump(data, f)
    return data
