import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO / "config" / "config.yaml"

# Hub look-ups must fail fast, never wait on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def default_config():
    from clgrid.inprocess import validated

    return validated(DEFAULT_CONFIG, SCHEMA)


def copy_workflow(root: Path) -> Path:
    """The workflow (Snakefile, rules, configs, envs, profiles) in ``root``, without results or downloads."""
    for name in ("Snakefile", "workflow", "config", "envs", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    return root
