"""Checkpoints that store only what changed against the run's initial weights (``storage.checkpoints: delta``).

A frozen or partly frozen backbone (freeze: all / partial, LoRA, CLIP's text-only training) leaves almost every
tensor of ``task<t>/state.pt`` bit for bit equal to the run's initial model
(``results/init/<benchmark>/<backbone>/s<seed>/model.pt``). A delta state keeps the tensors that differ and, for
the rest, a reference to that file: its path relative to the state's folder and its sha256. ``clgrid.io.load_torch``
expands a delta state back to the full one before any caller sees it, so every consumer (the next task, the
evaluation, the analyses, ``predict``, ``init_from``) gets the very tensors a full state holds: the policy is
lossless and every downstream file is byte-identical (``tests/test_storage.py``).

The policy is a layout setting, like ``tasks_per_job``: it is not part of any run spec or config hash, so
switching it reruns nothing, and a results folder may hold states of both formats; both load. The Snakefile hands
it to the train jobs in the environment variable ``CLGRID_CHECKPOINTS`` (``full`` or ``delta``), which the warm
worker passes on to the job it forks.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from clgrid import paths

log = logging.getLogger("clgrid")

ENV = "CLGRID_CHECKPOINTS"
"""The environment variable the Snakefile sets from ``storage.checkpoints`` (unset: ``full``)."""
POLICIES = ("full", "delta")
DELTA_KEY = "model_delta"
BASE_KEY = "model_base"


def checkpoint_policy() -> str:
    """``full`` or ``delta``: how this job saves task states (``CLGRID_CHECKPOINTS``; unset: full)."""
    policy = os.environ.get(ENV, "full") or "full"
    if policy not in POLICIES:
        raise ValueError(f"{ENV}={policy!r} is not a checkpoint policy; valid: {', '.join(POLICIES)} (set by the "
                         "config's storage.checkpoints)")
    return policy


def _under_results(template: str) -> str:
    return template.removeprefix("results/")


# A task state's path below the results folder, whatever that folder is called (run_cell writes to a workdir).
def set_checkpoint_policy(policy: str) -> None:
    """Hand ``storage.checkpoints`` to the jobs this process starts (the Snakefile calls it once, after validation):
    jobs inherit the environment, on a cluster too, where each job's Snakemake reads the config again."""
    if policy not in POLICIES:
        raise ValueError(f"storage.checkpoints {policy!r}; valid: {', '.join(POLICIES)}")
    os.environ[ENV] = policy


_GROUPS = {"benchmark": r"(?P<benchmark>[^/]+)", "backbone": r"(?P<backbone>[^/]+)", "method": r"[^/]+",
           "seed": r"(?P<seed>\d+)", "task": r"\d+"}
_STATE_RE = re.compile(r"(?P<root>^|.*/)" + re.sub(r"\\\{(\w+)\\\}", lambda m: _GROUPS[m[1]],
                                                   re.escape(_under_results(paths.TASK_STATE))) + "$")


def init_file_of(state_path: str | os.PathLike) -> Path | None:
    """The initial model of the run a task state belongs to (``paths.INIT_MODEL`` in the results folder that
    holds its ``runs/``), or None for a path outside the results layout."""
    match = _STATE_RE.match(Path(state_path).as_posix())
    if match is None:
        return None
    init = _under_results(paths.INIT_MODEL).format(benchmark=match["benchmark"], backbone=match["backbone"],
                                                   seed=match["seed"])
    return Path(match["root"] + init)


def same_bits(a: Any, b: Any) -> bool:
    """Whether two tensors are equal bit for bit: dtype, shape and bytes (``torch.equal`` calls -0.0 equal to 0.0
    and NaN unequal to itself; neither is lossless)."""
    import torch

    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.dtype != b.dtype or a.shape != b.shape or a.is_quantized or b.is_quantized:
        return False
    if a.numel() == 0:
        return True
    return torch.equal(a.detach().cpu().contiguous().reshape(-1).view(torch.uint8),
                       b.detach().cpu().contiguous().reshape(-1).view(torch.uint8))


def compact(state: dict[str, Any], init_path: str | os.PathLike, state_path: str | os.PathLike,
            init_model: dict[str, Any] | None = None) -> dict[str, Any]:
    """``state`` with its ``model`` replaced by the tensors that differ from ``init_path``'s (``model_delta``) and a
    reference to that file (``model_base``: path relative to ``state_path``'s folder, sha256, every key in order).

    ``init_model``: the initial file's model, when the caller holds it already.
    """
    from clgrid.io import load_torch, verified_sha256

    init_path = Path(init_path)
    sha256, _ = verified_sha256(init_path)
    if init_model is None:
        init_model = load_torch(init_path)["model"]
    model = state["model"]
    # A view would save its whole storage (torch.save writes storages, not views): a changed slice is cloned.
    changed = {key: value.clone() if value.untyped_storage().nbytes() > value.numel() * value.element_size()
               else value for key, value in model.items() if not same_bits(value, init_model.get(key))}
    base = {"path": os.path.relpath(init_path, Path(state_path).parent).replace(os.sep, "/"), "sha256": sha256,
            "keys": list(model)}
    compacted = {key: value for key, value in state.items() if key != "model"}
    return {**compacted, DELTA_KEY: changed, BASE_KEY: base}


def is_delta(obj: Any) -> bool:
    return isinstance(obj, dict) and BASE_KEY in obj and DELTA_KEY in obj


def expand(obj: dict[str, Any], state_path: str | os.PathLike) -> dict[str, Any]:
    """The full state of a delta state read from ``state_path``: ``model`` rebuilt from the initial file it names,
    after checking that file's sha256 against the one recorded when the state was saved."""
    from clgrid.io import CorruptFileError, checksum_path, file_sha256, load_torch

    base = obj[BASE_KEY]
    init_path = Path(state_path).parent / base["path"]
    if not init_path.exists():
        raise CorruptFileError(f"'{state_path}' stores only the weights that changed against the initial model "
                               f"'{init_path}' (storage.checkpoints: delta), which is missing: restore it (its "
                               f"sha256 was {base['sha256'][:12]}…); rebuilding it with init_model gives the same "
                               "file for a random or a pinned pretrained backbone")
    # load_torch below checks the file against its sidecar, so the sidecar's sha256 stands for the file's: the
    # initial model is read once to hash it, not twice (without a sidecar it is hashed here)
    sidecar = checksum_path(init_path)
    recorded = sidecar.read_text().split()[:1] if sidecar.exists() else []
    digest = recorded[0] if recorded else file_sha256(init_path)
    if digest != base["sha256"]:
        raise CorruptFileError(f"'{state_path}' stores only the weights that changed against the initial model "
                               f"'{init_path}', but that file changed since (sha256 {digest[:12]}…, recorded "
                               f"{base['sha256'][:12]}…): the state cannot be rebuilt from it; restore the initial "
                               "file, or delete the run's task states and rerun them")
    init_model = load_torch(init_path)["model"]
    delta = obj[DELTA_KEY]
    missing = [key for key in base["keys"] if key not in delta and key not in init_model]
    if missing:
        raise CorruptFileError(f"'{state_path}' refers to tensors {missing[:3]} that its initial model "
                               f"'{init_path}' lacks")
    model = {key: delta[key] if key in delta else init_model[key] for key in base["keys"]}
    full = {key: value for key, value in obj.items() if key not in (DELTA_KEY, BASE_KEY)}
    # The key order of a full state: the model after the method's entries (clgrid.fit.continue_run builds it so).
    return {**full, "model": model}


def for_saving(state: dict[str, Any], state_path: str | os.PathLike) -> dict[str, Any]:
    """What a job saves as a task state under this job's policy: the state itself (``full``), or its delta against
    the run's initial model where that file is found beside the results (else the full state, with a warning)."""
    if checkpoint_policy() != "delta" or "model" not in state:
        return state
    init_path = init_file_of(state_path)
    if init_path is None or not init_path.exists():
        log.warning("storage.checkpoints: delta, but no initial model for '%s' (looked for '%s'): saved in full",
                    state_path, init_path)
        return state
    return compact(state, init_path, state_path)


def full_digest_path(state_path: str | os.PathLike) -> Path:
    """Where a delta state records the sha256 its full form has: ``state.pt`` -> ``state.pt.full.sha256``, one line
    ``<sha256 of the full form> <sha256 of the delta file>`` (the second binds it to the file it describes)."""
    state_path = Path(state_path)
    return state_path.with_name(state_path.name + ".full.sha256")


def save_state(state_path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save a task state under this job's policy (``save_torch``: atomic, its sha256 beside it). A delta state also
    records the sha256 of the file the full policy writes (``full_digest_path``), which ``metrics.json`` lists
    as the checkpoint's digest: the policy changes no result file, those digests included."""
    import hashlib
    import io

    import torch

    from clgrid.io import save_torch

    saved = for_saving(state, state_path)
    full_digest_path(state_path).unlink(missing_ok=True)  # before the state changes: never a stale digest beside it
    if saved is state:
        save_torch(state_path, state)
        return
    buffer = io.BytesIO()
    torch.save(state, buffer)  # the full file's bytes (save_torch writes these), hashed, never written
    digest = hashlib.sha256(buffer.getbuffer()).hexdigest()
    del buffer
    save_torch(state_path, saved)
    _record_full_digest(state_path, digest)


def _record_full_digest(state_path: str | os.PathLike, full_digest: str) -> None:
    """Beside a delta state just saved: the full form's sha256 and the delta file's (from the sidecar save_torch
    wrote with it, not read back)."""
    from clgrid.io import atomic_path, checksum_path

    saved_digest = checksum_path(state_path).read_text().split()[0]
    with atomic_path(full_digest_path(state_path)) as tmp:
        tmp.write_text(f"{full_digest} {saved_digest}\n")


def checkpoint_digest(state_path: str | os.PathLike) -> str:
    """The sha256 a run's metrics record for a task state: its file's, checked against its sidecar (a corrupt file
    fails here), or for a delta state the full form's (torch-free: the metrics job reads no checkpoint)."""
    from clgrid.io import CorruptFileError, verified_sha256

    digest, _ = verified_sha256(state_path)
    full_digest = full_digest_path(state_path)
    if not full_digest.exists():
        return digest
    recorded = full_digest.read_text().split()
    if len(recorded) != 2 or not all(re.fullmatch(r"[0-9a-f]{64}", d) for d in recorded):
        raise CorruptFileError(f"'{full_digest}' does not hold two sha256s; delete it and '{state_path}' and rerun "
                               "the task")
    if recorded[1] != digest:  # written beside another file (a full state saved over a delta one by hand)
        log.warning("'%s' describes another file than '%s' now: recording the file's own sha256", full_digest,
                    state_path)
        return digest
    return recorded[0]


def compact_states(results: str | os.PathLike = "results", dry_run: bool = False) -> tuple[int, int, int]:
    """Rewrite a finished study's full task states under ``results/runs`` as deltas, in place, with each file's
    modification time kept: Snakemake sees nothing new, so nothing reruns, and ``metrics.json``'s digests (the
    full files' own, recorded in ``state.pt.full.sha256``) stay true. Returns (states rewritten, bytes before,
    bytes after); ``dry_run`` measures without writing. States already in delta form, and states whose initial
    model is missing, are left as they are."""
    import io

    import torch

    from clgrid.io import file_sha256, load_torch, save_torch

    count = before = after = 0
    for state_path in sorted(Path(results).glob(_under_results(paths.TASK_STATE).format(
            benchmark="*", backbone="*", method="*", seed="*", task="*"))):
        init_path = init_file_of(state_path)
        if init_path is None or not init_path.exists():
            continue
        if is_delta(torch.load(state_path, map_location="cpu", weights_only=True, mmap=True)):
            continue
        stat = state_path.stat()
        full_digest = file_sha256(state_path)
        state = load_torch(state_path)  # checked against its sidecar: a corrupt state is not compacted
        compacted = compact(state, init_path, state_path)
        count += 1
        before += stat.st_size
        if dry_run:
            buffer = io.BytesIO()
            torch.save(compacted, buffer)
            after += buffer.getbuffer().nbytes
            continue
        save_torch(state_path, compacted)
        _record_full_digest(state_path, full_digest)
        after += state_path.stat().st_size
        os.utime(state_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return count, before, after
