"""Print every shipped config's run specs as sorted compact JSON, one line per run, for a before/after diff.

Run it once in each checkout (``PYTHONPATH=<checkout>/src python <this> <checkout>``) and compare the outputs:
moving the methods' hyperparameters from the schema into their classes must leave every run spec byte-identical
(a default ``100`` must not become ``100.0``). The validated config's ``method_params`` blocks are printed too.
"""

import copy
import json
import sys
import tempfile
from pathlib import Path

import yaml

from clgrid import config as cl
from clgrid.config import check


def shipped_configs(root: Path) -> list[Path]:
    return [root / "config" / "config.yaml", *sorted((root / "config" / "experiments").glob("*.yaml")),
            *sorted((root / "tests" / "data" / "good_configs").glob("*.yaml"))]


def stand_in_folders(config: dict, scratch: Path) -> None:
    """Datasets read from a local folder (ImageNet at /path/to/imagenet) point at an empty ImageFolder stand-in, so
    the plan-time check of the folder passes: the run specs do not depend on the folder."""
    for name, entry in (config.get("datasets") or {}).items():
        if isinstance(entry, dict) and entry.get("path") and not Path(entry["path"]).is_dir():
            for split in ("train", "val"):
                (scratch / name / split).mkdir(parents=True, exist_ok=True)
            entry["path"] = str(scratch / name)


def lines_of(root: Path, path: Path) -> list[str]:
    config = yaml.safe_load(path.read_text())
    stand_in_folders(config, Path(tempfile.mkdtemp()))
    check(config, root / "workflow" / "schemas" / "config.schema.yaml", files=[path])
    name = path.relative_to(root)
    out = [f"{name} method_params {json.dumps(config['method_params'], sort_keys=True, separators=(',', ':'))}"]
    for run in cl.runs(config):
        spec = cl.run_spec(copy.deepcopy(config), run.benchmark, run.backbone, run.method, run.seed)
        out.append(f"{name} {run.id} {json.dumps(spec, sort_keys=True, separators=(',', ':'))}")
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve()
    for path in shipped_configs(root):
        print("\n".join(lines_of(root, path)))
