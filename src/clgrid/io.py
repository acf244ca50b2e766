"""Atomic writes, integrity-checked reads and provenance for every file clgrid makes.

Every result is written to a temporary file beside its target and renamed into
place, so a killed job never leaves a half-written file that a later job would
read. Reads that fail (truncated zip, bad JSON) raise ``CorruptFileError`` that
names the file and how to rebuild it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from clgrid import __version__


class CorruptFileError(RuntimeError):
    """A file clgrid made earlier cannot be read: truncated, partial or not ours."""


def _rebuild_hint(path: Path) -> str:
    return f"delete '{path}' and rerun snakemake to rebuild it"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give results the usual umask-derived mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and fixed separators: equal objects give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_hash(obj: Any) -> str:
    """Short sha256 of an object's canonical JSON, recorded in every result."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing file '{path}': run snakemake to build it")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"'{path}' is not valid JSON ({err}); {_rebuild_hint(path)}") from err


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def load_npz(path: str | os.PathLike, required: tuple[str, ...] = (), verify: bool = False) -> dict[str, Any]:
    """Load every array of an ``.npz`` eagerly, so a truncated member fails here, not mid-training.

    With ``verify``, the file's sha256 must equal the one its sidecar JSON (same name, ``.json``) recorded when
    the file was written: a bit flip that still unzips is caught too.
    """
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing array file '{path}'")
    sidecar = path.with_suffix(".json")
    if verify and sidecar.exists():
        expected = read_json(sidecar).get("sha256")
        if expected and file_sha256(path) != expected:
            raise CorruptFileError(f"'{path}' does not match the sha256 recorded in '{sidecar}' when it was written "
                                   f"(rule prepare_dataset makes it); {_rebuild_hint(path)}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as err:
        raise CorruptFileError(f"'{path}' is truncated or corrupt ({err}); {_rebuild_hint(path)}") from err
    missing = [name for name in required if name not in arrays]
    if missing:
        raise CorruptFileError(f"'{path}' lacks arrays {missing} (has {sorted(arrays)}); {_rebuild_hint(path)}")
    return arrays


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """Atomic ``torch.save``, byte-identical for identical content.

    Saved through a file object: given a path, torch names the archive's
    records after the (random) temporary file, so equal states got different bytes.
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def load_torch(path: str | os.PathLike) -> Any:
    """Load a checkpoint on CPU; a truncated or foreign file raises ``CorruptFileError``."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing checkpoint '{path}': run snakemake to build it")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CorruptFileError(f"checkpoint '{path}' is truncated or corrupt ({err}); {_rebuild_hint(path)}") from err
    if not isinstance(obj, dict) or "clgrid" not in obj:
        raise CorruptFileError(f"'{path}' is not a clgrid checkpoint; {_rebuild_hint(path)}")
    return obj


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the checkout clgrid runs in, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(spec: Any, seed: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """What made a result: config hash, versions, commit, seed, device. No timestamps, so reruns are byte-identical."""
    return {
        "config_hash": config_hash(spec),
        "clgrid": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": _package_version("torch"),
        "numpy": _package_version("numpy"),
        "seed": seed,
        "device": device,
    }
