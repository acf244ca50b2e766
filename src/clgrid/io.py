"""Atomic writes, integrity-checked reads and provenance for every file clgrid makes.

Every result is written to a temporary file beside its target and renamed into
place, so a killed job never leaves a half-written file that a later job would
read. Checkpoints and JSON results get a checksum file ``<file>.sha256`` (the
``sha256sum`` format) written right after them; reads recompute the digest, so a
truncated or bit-flipped file fails before it is used, even where it still
parses. Checkpoints load with ``torch.load(weights_only=True)``: a file from
someone else can hold tensors and plain containers, never code that runs. A read
that fails raises ``CorruptFileError`` naming the file, the rule that makes it and
how to rebuild it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from clgrid import __version__
# Which rule makes a path, derived from the templates the rules use; re-exported for the error hints.
from clgrid.paths import RULE_OF_PATH, producer_rule  # noqa: F401

log = logging.getLogger("clgrid.io")


class CorruptFileError(RuntimeError):
    """A file clgrid made earlier cannot be read: truncated, partial, altered or not ours."""


def _rebuild_hint(path: str | os.PathLike) -> str:
    rule = producer_rule(path)
    if rule is None:
        return "restore it from where it came from (if a snakemake job made it, delete it and rerun that job)"
    if rule == "train_task":  # or a job of several tasks (tasks_per_job), whose rule is named after the benchmark
        return ("rule train_task makes it (train_<benchmark>_tasks<first>to<last> where a job trains several tasks): "
                "delete it and run your snakemake command again to rebuild it and what depends on it, or rebuild it "
                f"with `snakemake --cores all --forcerun {Path(path).as_posix()}`")
    return (f"rule {rule} makes it: delete it and run your snakemake command again to rebuild it and what depends on "
            f"it, or rebuild every output of that rule with `snakemake --cores all --forcerun {rule}`")


class WriteError(OSError):
    """An output could not be written (full disk, read-only or unwritable folder); nothing partial was left."""


_WRITE_FIXES = {
    errno.ENOSPC: "free space on the file system that holds it (df -h '{folder}')",
    errno.EDQUOT: "free space within your disk quota (quota -s)",
    errno.EROFS: "the file system is mounted read-only: run from a writable copy or remount it",
    errno.EACCES: "make '{folder}' writable for you (ls -ld '{folder}')",
    errno.EPERM: "make '{folder}' writable for you (ls -ld '{folder}')",
}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    A failed write (full disk, read-only folder, no permission) removes the temporary file and raises
    ``WriteError`` naming the file, the cause and the fix: the target is left as it was, never half-written.
    """
    target = Path(path)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # mkstemp makes the file private (0600); give results the usual umask-derived mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except OSError as err:
        fix = _WRITE_FIXES.get(err.errno)
        if fix is None or isinstance(err, WriteError):
            raise
        raise WriteError(err.errno, f"cannot write '{target}': {os.strerror(err.errno)}; "
                         f"{fix.format(folder=target.parent)}, then run the same snakemake command again "
                         f"(--rerun-incomplete after a kill); nothing partial was left") from err
    finally:
        if tmp_path is not None and tmp_path.exists():
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


def checksum_path(path: str | os.PathLike) -> Path:
    """Where the sha256 of a file clgrid wrote is recorded: ``state.pt`` -> ``state.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_checked(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically and its sha256 to ``<path>.sha256`` (``sha256sum`` format), hashed from
    the bytes in memory rather than read back.

    The old checksum goes before the new file replaces the old one: a job killed in between leaves a whole file
    without a checksum (read unverified, with a warning), never a file beside another file's checksum.
    """
    target = Path(path)
    sidecar = checksum_path(target)
    digest = hashlib.sha256(data).hexdigest()
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
        sidecar.unlink(missing_ok=True)
    with atomic_path(sidecar) as tmp:
        tmp.write_text(f"{digest}  {target.name}\n")


def remove_output(path: str | os.PathLike) -> None:
    """Delete a file clgrid wrote and its checksum, if they exist."""
    Path(path).unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


_unverified_reported: list[str] = []


def _report_unverified(path: Path, fallback: str) -> None:
    """Warn that ``path`` has no checksum (written before clgrid recorded them, or copied without it); a grid of old
    results would warn once per file, so only the first few are named."""
    _unverified_reported.append(str(path))
    if len(_unverified_reported) <= 3:
        log.warning("'%s' has no checksum file '%s' (written before clgrid recorded checksums, or copied without "
                    "it): %s", path, checksum_path(path).name, fallback)
    elif len(_unverified_reported) == 4:
        log.warning("more files without a checksum; not naming each")


def verified_sha256(path: str | os.PathLike, data: bytes | None = None) -> tuple[str, bool]:
    """(sha256 of ``path``, whether it was checked against ``<path>.sha256``); raises ``CorruptFileError`` where the
    recorded checksum differs. ``data``: the file's bytes, when the caller read them already."""
    path = Path(path)
    digest = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
    sidecar = checksum_path(path)
    try:
        recorded = sidecar.read_text().split()
    except FileNotFoundError:
        return digest, False
    except (OSError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"cannot read the checksum file '{sidecar}' of '{path}' ({err}); "
                               f"{_rebuild_hint(path)}") from err
    expected = recorded[0] if recorded else ""
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise CorruptFileError(f"the checksum file '{sidecar}' of '{path}' does not hold a sha256; "
                               f"{_rebuild_hint(path)}")
    if digest != expected:
        raise CorruptFileError(f"'{path}' does not match the sha256 recorded when it was written (in '{sidecar.name}': "
                               f"{expected[:12]}…, the file now: {digest[:12]}…): it was truncated or altered since; "
                               f"{_rebuild_hint(path)}")
    return digest, True


def _missing(path: Path, what: str = "file") -> FileNotFoundError:
    rule = producer_rule(path)
    made_by = f" (rule {rule} makes it)" if rule else ""
    return FileNotFoundError(f"missing {what} '{path}'{made_by}: run snakemake to build it")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (sorted keys, so reruns give equal bytes) atomically, its sha256 in ``<path>.sha256``."""
    write_checked(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file clgrid wrote, checked against its recorded sha256 first (a flipped digit still parses)."""
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    data = path.read_bytes()
    if not verified_sha256(path, data)[1]:
        _report_unverified(path, "read without verification")
    try:
        return json.loads(data.decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"'{path}' is not valid JSON ({err}); {_rebuild_hint(path)}") from err


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def load_npz(path: str | os.PathLike, required: tuple[str, ...] = (), verify: bool = False,
             skip: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Load every array of an ``.npz`` eagerly, so a truncated member fails here, not mid-training; the members
    ``skip`` names (a test split a selection job must not read) are neither decoded nor required.

    With ``verify``, the file's sha256 must equal the one its sidecar JSON (same name, ``.json``) recorded when
    the file was written: a bit flip that still unzips is caught too. Without a recorded sha256 (``verify`` off,
    an imported file, no sidecar) every member is checked against the zip's CRC-32s first.
    """
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise _missing(path, "array file")
    sidecar = path.with_suffix(".json")
    expected = read_json(sidecar).get("sha256") if verify and sidecar.exists() else None
    if expected:
        if file_sha256(path) != expected:
            raise CorruptFileError(f"'{path}' does not match the sha256 recorded in '{sidecar}' when it was written: "
                                   f"it was truncated or altered since; {_rebuild_hint(path)}")
    else:
        # np.load stops reading a member where its array ends, before the zip's CRC-32 check at the member's end:
        # a flip in the compressed data that still inflates would pass. One extra pass checks every CRC.
        _check_zip_crcs(path, "array file")
        if verify:
            _report_unverified(path, f"no sha256 in '{sidecar.name}' either; checked against its zip CRC-32s only")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files if skip is None or not skip(name)}
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged zip raises BadZipFile, zlib.error, ValueError, EOFError, ...
        raise CorruptFileError(f"'{path}' is truncated or corrupt ({err}); {_rebuild_hint(path)}") from err
    missing = [name for name in required if name not in arrays and (skip is None or not skip(name))]
    if missing:
        raise CorruptFileError(f"'{path}' lacks arrays {missing} (has {sorted(arrays)}); {_rebuild_hint(path)}")
    return arrays


def _weights_only_problem(obj: Any, where: str = "the checkpoint") -> str | None:
    """Where ``obj`` holds something ``torch.load(weights_only=True)`` refuses (numpy values, custom objects), or None.

    Exact types: a numpy float64 is a ``float`` subclass but pickles as a numpy global.
    """
    import collections

    import torch

    if isinstance(obj, torch.Tensor) or type(obj) in (str, bytes, int, float, bool, complex, type(None), torch.dtype,
                                                        torch.device, torch.Size):
        return None
    if type(obj) in (dict, collections.OrderedDict):
        for key, value in obj.items():
            problem = (_weights_only_problem(key, f"a key of {where}")
                       or _weights_only_problem(value, f"{where}[{key!r}]"))
            if problem:
                return problem
        return None
    if type(obj) in (list, tuple, set):
        for i, value in enumerate(obj):
            problem = _weights_only_problem(value, f"{where}[{i}]")
            if problem:
                return problem
        return None
    return f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}"


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """Atomic ``torch.save`` with a recorded sha256, byte-identical for identical content.

    Saved through a file object: given a path, torch names the archive's
    records after the (random) temporary file, so equal states got different bytes.
    Only tensors, numbers, strings, None and lists, tuples, sets and dicts of them are
    saved (what ``load_torch`` reads back with ``weights_only=True``); anything else
    fails here, at the job that made it, not at the next job.
    """
    import torch

    problem = _weights_only_problem(obj)
    if problem:
        raise TypeError(f"cannot save '{path}': {problem}; a checkpoint holds only tensors, numbers, strings, None "
                        "and lists, tuples, sets and dicts of them, so that torch.load(weights_only=True) reads it "
                        "(store numpy arrays as tensors, numpy scalars as int or float)")
    # Serialised in memory first: torch's writer reports a full disk as an opaque RuntimeError ("unexpected pos"),
    # a plain write raises OSError(ENOSPC), which atomic_path turns into a message naming the file and the fix.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_checked(path, buffer.getbuffer())


def _check_zip_crcs(path: Path, what: str = "checkpoint") -> None:
    """Every record of a zip (a torch checkpoint, an .npz) against the CRC-32 stored for it when it was written
    (torch.load and np.load do not check them): the check for files without a recorded sha256."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            # torch's reader takes a record flagged as a folder (MS-DOS attribute 0x10) for an empty one and fills
            # the tensor with whatever memory held: one flipped bit, CRC intact. torch.save never writes folders.
            bad = bad or next((info.filename for info in archive.infolist() if info.external_attr & 0x10), None)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - damaged headers raise anything from BadZipFile to NotImplementedError
        raise CorruptFileError(f"{what} '{path}' is truncated or corrupt ({err}); {_rebuild_hint(path)}") from err
    if bad is not None:
        raise CorruptFileError(f"{what} '{path}' is corrupt: its record '{bad}' does not match the CRC-32 and "
                               f"attributes stored when it was written; {_rebuild_hint(path)}")


def _refusal_reason(err: Exception) -> str:
    """The line of torch's weights_only refusal that says what was refused (its first paragraph is boilerplate)."""
    parts = [p.strip() for p in str(err).split("\n\n") if p.strip()]
    reasons = [p for p in parts if not p.startswith(("Weights only load failed", "Check the documentation"))]
    return (reasons[0] if reasons else str(err)).splitlines()[0].rstrip(".")


def load_torch(path: str | os.PathLike) -> Any:
    """Load a checkpoint on CPU, checked against its recorded sha256, with ``weights_only=True``.

    A truncated, altered or foreign file raises ``CorruptFileError``; so does one holding objects a clgrid
    checkpoint never holds (code to run on unpickling, numpy arrays): it is refused, nothing in it is run. A task
    state saved as its delta to the run's initial weights (``clgrid.storage``) comes back whole.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise _missing(path, "checkpoint")
    if not verified_sha256(path)[1]:
        _check_zip_crcs(path)
        _report_unverified(path, "checked against its zip CRC-32s only")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CorruptFileError(f"refused to load '{path}': it holds Python objects other than tensors and plain "
                               f"containers ({_refusal_reason(err)}), which clgrid never writes, so it was not made "
                               f"by clgrid or was altered; nothing in it was run; {_rebuild_hint(path)}") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CorruptFileError(f"checkpoint '{path}' is truncated or corrupt ({err}); {_rebuild_hint(path)}") from err
    if not isinstance(obj, dict) or "clgrid" not in obj:
        raise CorruptFileError(f"'{path}' is not a clgrid checkpoint; {_rebuild_hint(path)}")
    from clgrid import storage  # a state saved as its delta to the initial weights (storage.checkpoints: delta)

    return storage.expand(obj, path) if storage.is_delta(obj) else obj


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the checkout clgrid runs in, else of the checkout its code is in (a workflow run with
    ``snakemake --directory`` elsewhere still records the code's commit), else None."""
    for where in (None, Path(__file__).resolve().parent):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True, cwd=where
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.stdout.strip():
            return out.stdout.strip()
    return None


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
