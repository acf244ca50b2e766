"""Proof that a change to clgrid changes no result byte and no job: runs workflows with the code before and after,
compares every file under results/, replans a results folder made before with the code after, and plans every
shipped config with both codes.

0. Plans first (minutes), then one workflow at a time; the JSON and Markdown are rewritten after each.
1. Outputs. For each workflow (the default grid, a reduced der_split_mnist, the DML and CLIP test workflows), a
   fresh copy of each code's workflow runs ``snakemake --cores 2`` with ``PYTHONPATH=<code>/src`` (so the jobs import
   that code), both at the same path (so nothing differs by where it ran), and every file under results/ is compared
   byte for byte. The only differences allowed are normalised explicitly and listed: the recorded git commit
   (text files with the commit replaced; checkpoints loaded with torch, every tensor compared bit for bit and every
   other field after removing ``git_commit``; a sha256 recorded in a text file, such as a ``.sha256`` sidecar or
   metrics.json's checkpoint hashes, when it hashes a file that differs only by what is normalised), matplotlib's
   PDF ``/CreationDate`` (wall clock: it differs between two runs of the same code), the jobs' logs (``*.log``) and
   Snakemake ``benchmark:`` timings (``*.bench.tsv``, results/benchmarks/).
2. Replan. The "before" results folder, with the "after" Snakefile, rules, configs and test fixtures copied over
   it, is planned with ``snakemake -n`` and the after code: it must say "Nothing to be done".
3. Plans. Every shipped config (config/config.yaml, config/experiments/*.yaml) is planned with
   ``snakemake --dry-run --forceall`` (every job of the DAG, without looking for datasets or weights that are not
   here) by both codes; each job's rule, inputs, outputs, params, shell command, log, benchmark, threads and
   resources are recorded from Snakemake's own job objects and compared job by job.

The jobs run with ``GIT_DIR`` at the code's checkout, so provenance records that code's commit (as in a clone)
rather than nothing (the copies run outside any git repository).

    python tools/same_results.py                                # 23406c2 vs this working tree
    python tools/same_results.py --before 23406c2 --after 23406c2   # the harness against itself
    python tools/same_results.py --reuse-before /tmp/same_before    # keep the before side for the next run

Writes docs/evidence/same_results.md and benchmarks/results/same_results.json.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import WORKFLOW_PARTS, checkout, code_env, machine  # noqa: E402

MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
DEFAULT_BEFORE = "23406c2"
COMMIT_MARK = "<git commit>"


# --- the workflows run with both codes --------------------------------------------------------------------------

@dataclass(frozen=True)
class Workflow:
    """A workflow run in a fresh copy of a code's checkout: its config files (relative to the copy), and what the
    copy needs besides the Snakefile, rules and configs."""

    name: str
    configfiles: tuple[str, ...] = ()
    needs_fixtures: bool = False
    setup: str | None = None  # name of a function below that writes inputs into the copy

    def snakemake_args(self) -> list[str]:
        return ["--configfile", *self.configfiles] if self.configfiles else []


WORKFLOWS = {
    wf.name: wf for wf in (
        Workflow("default"),
        Workflow("dml", ("tests/fixtures/dml_digits.yaml",), needs_fixtures=True),
        Workflow("der_split_mnist_small", ("config/experiments/der_split_mnist.yaml", "same_results_mnist.yaml",
                                           "same_results_der_small.yaml"), setup="der_small_inputs"),
        Workflow("clip", ("tests/fixtures/clip_tiny.yaml",), needs_fixtures=True),
        Workflow("flava", ("tests/fixtures/flava_tiny.yaml",), needs_fixtures=True),
        Workflow("clip_mtil", ("tests/fixtures/clip_mtil_tiny.yaml",), needs_fixtures=True, setup="mtil_inputs"),
    )
}


def der_small_inputs(root: Path) -> None:
    """MNIST from ../shared/data by absolute path (the copy runs elsewhere) and the reducing overlay of tools/."""
    if not MNIST.exists():
        sys.exit(f"{MNIST} is missing: the reduced der_split_mnist trains on MNIST from ../shared/data")
    (root / "same_results_mnist.yaml").write_text(json.dumps({"datasets": {"mnist": {"npz": str(MNIST)}}}) + "\n")
    shutil.copy(TOOLS / "der_split_mnist_small.yaml", root / "same_results_der_small.yaml")


def mtil_inputs(root: Path) -> None:
    """The three datasets tests/test_workflow_clip.py's ``mtil_grid`` fixture cuts from digits (classes 0-2, 3-5,
    6-8 with their names) into data_in/, written the same way."""
    import numpy as np
    from sklearn.datasets import load_digits

    names = {"digits_low": ["zero", "one", "two"], "digits_mid": ["three", "four", "five"],
             "digits_high": ["six", "seven", "eight"]}
    digits = load_digits()
    x = (digits.images * 255 / 16).round().astype(np.uint8)[:, None]
    (root / "data_in").mkdir(exist_ok=True)
    for first, name in zip((0, 3, 6), names):
        keep = np.flatnonzero((digits.target >= first) & (digits.target < first + 3))
        train, test = keep[: int(0.7 * len(keep))], keep[int(0.7 * len(keep)):]
        np.savez(root / "data_in" / f"{name}.npz", x_train=x[train], y_train=digits.target[train] - first,
                 x_test=x[test], y_test=digits.target[test] - first, classes=np.array(names[name]))


# --- codes ------------------------------------------------------------------------------------------------------

@dataclass
class Code:
    """One side of the comparison: a checkout whose src/ the jobs import, and the commit provenance records."""

    label: str
    path: Path
    commit: str
    made_here: bool = False

    def env(self) -> dict:
        return {**code_env(self.path), "GIT_DIR": str(git_dir(self.path))}


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def git_dir(path: Path) -> Path:
    return Path(git("rev-parse", "--absolute-git-dir", cwd=path))


def resolve(label: str, rev: str, work: Path) -> Code:
    """``rev`` as a checkout: the working tree this script lives in for "worktree", else a detached git worktree."""
    if rev == "worktree":
        return Code(label, REPO, git("rev-parse", "HEAD"))
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    dest = work / "code" / commit[:12]
    made = not (dest / "src").exists()
    checkout(commit, dest)
    return Code(label, dest, commit, made)


def imported_from(code: Code) -> str:
    """Where a job started with this code's environment imports clgrid from (checked against the code)."""
    out = subprocess.run([sys.executable, "-c", "import clgrid; print(clgrid.__file__)"], env=code.env(),
                         capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()).stdout.strip()
    if Path(out).resolve() != (code.path / "src" / "clgrid" / "__init__.py").resolve():
        sys.exit(f"the {code.label} code's jobs would import clgrid from {out}, not from {code.path}/src")
    return out


# --- running a workflow -----------------------------------------------------------------------------------------

def copy_code_workflow(code: Code, wf: Workflow, dest: Path) -> None:
    """The Snakefile, rules, configs (and the test fixtures or inputs ``wf`` needs) of ``code`` into ``dest``."""
    for name in WORKFLOW_PARTS:
        src = code.path / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest / name)
    if wf.needs_fixtures:
        shutil.copytree(code.path / "tests" / "fixtures", dest / "tests" / "fixtures", dirs_exist_ok=True)
    if wf.setup:
        globals()[wf.setup](dest)


def snakemake(code: Code, root: Path, args: list[str], log: Path) -> tuple[int, float, str]:
    """``python -m snakemake ARGS`` in ``root`` with ``code``'s environment: exit status, seconds, output."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=root, env=code.env(), capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    return proc.returncode, seconds, proc.stdout + proc.stderr


def run_workflow(code: Code, wf: Workflow, run_dir: Path, keep: Path, logs: Path) -> dict:
    """Run ``wf`` with ``code`` from nothing in ``run_dir`` (always the same path), then move the folder to ``keep``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(keep, ignore_errors=True)
    run_dir.mkdir(parents=True)
    copy_code_workflow(code, wf, run_dir)
    rc, seconds, out = snakemake(code, run_dir, ["--cores", "2", *wf.snakemake_args()], logs / f"{code.label}_{wf.name}.log")
    if rc != 0:
        sys.exit(f"{wf.name} failed with the {code.label} code ({code.path}); see {logs}/{code.label}_{wf.name}.log:\n"
                 f"{out[-3000:]}")
    steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", out)
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(keep))
    return {"seconds": round(seconds, 1), "jobs": int(steps[-1][1]) if steps else 0}


# --- 1. comparing results ---------------------------------------------------------------------------------------

def commits_since(code: Code) -> tuple[str, ...]:
    """The commits a code's jobs can have recorded: its commit, and for the working tree every commit made on it
    since (a job records HEAD when it runs, and HEAD moves when someone commits during a run)."""
    if code.path != REPO:
        return (code.commit,)
    return (code.commit, *git("rev-list", "--ancestry-path", f"{code.commit}..HEAD").split())


def log_or_timing(rel: str) -> str | None:
    """"log" for a job's log, "timing" for a Snakemake ``benchmark:`` file (``*.bench.tsv`` beside a run's outputs,
    or under results/benchmarks/), else None."""
    if rel.endswith(".log"):
        return "log"
    return "timing" if rel.endswith(".bench.tsv") or rel.startswith("benchmarks/") and rel.endswith(".tsv") else None


PDF_DATE = re.compile(rb"/CreationDate \(D:\d{14}Z?\)")


def without_pdf_date(data: bytes) -> bytes:
    """A PDF with matplotlib's ``/CreationDate`` (the wall clock when the figure was saved) blanked, same length."""
    return PDF_DATE.sub(lambda m: b"/CreationDate (D:" + b"0" * (len(m.group()) - 19) + b"Z)", data)


def drop_commit(obj):
    """``obj`` with every ``git_commit`` entry removed, at any depth."""
    if isinstance(obj, dict):
        return {k: drop_commit(v) for k, v in obj.items() if k != "git_commit"}
    if isinstance(obj, (list, tuple)):
        return type(obj)(drop_commit(v) for v in obj)
    return obj


def same_object(a, b, where: str = "") -> str | None:
    """Where two loaded checkpoints first differ (None: equal): tensors bit for bit (dtype, shape, bytes), every
    other value by type and ==."""
    import torch

    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        bits = lambda t: t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
        return None if torch.equal(bits(a), bits(b)) else f"{where}: tensor values differ"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        return next((d for k in a if (d := same_object(a[k], b[k], f"{where}/{k}"))), None)
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := same_object(x, y, f"{where}[{i}]"))), None)
    return None if a == b or (a != a and b != b) else f"{where}: {a!r} vs {b!r}"


def checkpoint_differs(before: Path, after: Path) -> str | None:
    """None when the checkpoints are equal once ``git_commit`` is removed; else where they first differ."""
    import torch

    load = lambda p: drop_commit(torch.load(p, map_location="cpu", weights_only=True))  # noqa: E731
    return same_object(load(before), load(after))


HEX64 = re.compile(rb"\b[0-9a-f]{64}\b")


@dataclass
class Normaliser:
    """What one side's text files are compared without: its commit, and the sha256 of every file found to differ
    only by what is normalised (a checkpoint's commit, a PDF's date), each replaced by a name for that file, so a
    ``.sha256`` sidecar or a record of checkpoint hashes (metrics.json) compares equal when its files do."""

    commits: tuple[str, ...]
    digests: dict[bytes, bytes] = field(default_factory=dict)

    def text(self, data: bytes) -> tuple[bytes, bytes]:
        """(``data`` with the commit replaced, then also with known digests replaced)."""
        for commit in self.commits:
            data = data.replace(commit.encode(), COMMIT_MARK.encode())
        return data, HEX64.sub(lambda m: self.digests.get(m.group(), m.group()), data)


def classify(rel: str, before: Path, after: Path, sides: tuple[Normaliser, Normaliser]) -> tuple[str, str]:
    """(verdict, why) for one file present on both sides: identical, normalised (the kind) or different."""
    a, b = before.read_bytes(), after.read_bytes()
    if a == b:
        return "identical", ""
    if log_or_timing(rel):
        return "normalised", log_or_timing(rel)
    if rel.endswith(".pdf") and without_pdf_date(a) == without_pdf_date(b):
        return "normalised", "PDF creation date"
    if rel.endswith(".pt"):
        where = checkpoint_differs(before, after)
        return ("normalised", "git commit (checkpoint)") if where is None else ("different", where)
    (a_commit, a_all), (b_commit, b_all) = sides[0].text(a), sides[1].text(b)
    if a_commit == b_commit:
        return "normalised", "git commit (text)"
    if a_all == b_all:
        return "normalised", "sha256 of files that differ only as above (text)"
    return "different", first_text_difference(a_all, b_all)


def first_text_difference(a: bytes, b: bytes) -> str:
    try:
        lines = list(difflib.unified_diff(a.decode().splitlines(), b.decode().splitlines(), lineterm="", n=0))
    except UnicodeDecodeError:
        return f"binary, {len(a)} vs {len(b)} bytes"
    return " | ".join(line[:160] for line in lines[2:6])


def compare_results(before: Path, after: Path, codes: tuple[Code, Code]) -> dict:
    """Every file under both results/ folders, classified. Checkpoints first; a file that records hashes is
    classified again once the files it hashes are (until nothing changes)."""
    files = lambda root: {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    names_before, names_after = files(before), files(after)
    verdicts = {rel: ("different", "only before" if rel in names_before else "only after")
                for rel in names_before ^ names_after}
    sides = tuple(Normaliser(commits_since(code)) for code in codes)
    pending = sorted(names_before & names_after, key=lambda r: (not r.endswith(".pt"), r))
    while pending:
        for rel in pending:
            verdicts[rel] = classify(rel, before / rel, after / rel, sides)
            if verdicts[rel][0] == "normalised" and not log_or_timing(rel):
                for side, root in zip(sides, (before, after)):
                    side.digests[hashlib.sha256((root / rel).read_bytes()).hexdigest().encode()] = \
                        f"<sha256 of {rel}>".encode()
        retry = [rel for rel in pending if verdicts[rel][0] == "different"]
        pending = retry if len(retry) < len(pending) else []  # again only while a pass learnt new digests
    counts = {v: sum(1 for verdict, _ in verdicts.values() if verdict == v) for v in ("identical", "normalised",
                                                                                          "different")}
    kinds: dict[str, int] = {}
    for verdict, why in verdicts.values():
        if verdict == "normalised":
            kinds[why] = kinds.get(why, 0) + 1
    different = {rel: why for rel, (verdict, why) in sorted(verdicts.items()) if verdict == "different"}
    return {"files": len(verdicts), **counts, "normalised_kinds": kinds, "different_files": different}


# --- 2. replanning a before folder with the after code ----------------------------------------------------------

def replan(before_dir: Path, after: Code, wf: Workflow, replan_dir: Path, logs: Path) -> dict:
    """``snakemake -n`` with the after code and workflow on a copy of the before folder (mtimes kept)."""
    shutil.rmtree(replan_dir, ignore_errors=True)
    shutil.copytree(before_dir, replan_dir, symlinks=True)
    for name in ("workflow", "config"):
        shutil.rmtree(replan_dir / name)
    copy_code_workflow(after, Workflow(wf.name, wf.configfiles, wf.needs_fixtures), replan_dir)
    rc, _, out = snakemake(after, replan_dir, ["-n", "--cores", "2", *wf.snakemake_args()],
                           logs / f"replan_{wf.name}.log")
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:.*\n)*?\s+reason: (.*)$", out, re.M)
    nothing = "Nothing to be done" in out
    shutil.rmtree(replan_dir, ignore_errors=True)
    return {"exit_status": rc, "nothing_to_be_done": nothing and rc == 0,
            "planned": [{"rule": r, "reason": why} for r, why in jobs], "output": out.strip().splitlines()[-30:]}


# --- 3. planning every shipped config ---------------------------------------------------------------------------

def plan_worker(out: str, argv: list[str]) -> None:
    """Inside a planning process: Snakemake's CLI on ``argv`` with its dry-run executor recording every job it
    would run (one JSON line per job) in ``out``."""
    from snakemake.executors import dryrun

    sink = open(out, "w")  # noqa: SIM115 - closed when the process exits

    def record(self, job):
        for one in (job.jobs if job.is_group() else [job]):
            sink.write(json.dumps(job_record(one), sort_keys=True) + "\n")
        sink.flush()
        original(self, job)

    original = dryrun.Executor.run_job
    dryrun.Executor.run_job = record
    from snakemake.cli import main

    main(argv)


def job_record(job) -> dict:
    """What decides whether Snakemake reruns a job, and what it runs: rule, files, params, command, resources."""
    resources = {k: str(v) for k, v in job.resources.items() if not k.startswith("_") and k != "tmpdir"}
    return {"rule": job.rule.name, "output": [str(f) for f in job.output], "input": [str(f) for f in job.input],
            "params": {k: str(v) for k, v in job.params.items()}, "params_positional": [str(v) for v in job.params],
            "shell": job.shellcmd, "log": [str(f) for f in job.log],
            "benchmark": str(job.benchmark) if job.benchmark else None, "threads": job.threads,
            "resources": resources, "conda": str(job.rule.conda_env) if job.rule.conda_env else None}


def shipped_configs(code: Code) -> list[str]:
    return ["config/config.yaml", *sorted(p.relative_to(code.path).as_posix()
                                          for p in (code.path / "config" / "experiments").glob("*.yaml"))]


def stand_in_folders(root: Path, config: str) -> list[str]:
    """For a config that names dataset folders (``datasets.<name>.path``, e.g. ImageNet, which has no download):
    empty stand-ins (train/, val/) in ``root`` and a config file pointing there, laid over the config; the same for
    both codes. [] when the config names none."""
    import yaml

    datasets = (yaml.safe_load((root / config).read_text()) or {}).get("datasets") or {}
    folders = {name: f"stand_in_data/{name}" for name, options in datasets.items() if "path" in (options or {})}
    for folder in folders.values():
        for split in ("train", "val"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
    if not folders:
        return []
    overlay = root / f"stand_in_{Path(config).stem}.yaml"
    overlay.write_text(json.dumps({"datasets": {n: {"path": f} for n, f in folders.items()}}) + "\n")
    return [overlay.name]


def plan_all(code: Code, work: Path, plans: Path, logs: Path) -> dict[str, dict]:
    """Every shipped config of ``code`` planned with ``--dry-run --forceall`` by that code: jobs by output."""
    root = work / f"plan_{code.label}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    copy_code_workflow(code, Workflow("plan"), root)
    plans.mkdir(parents=True, exist_ok=True)
    result = {}
    for config in shipped_configs(code):
        name = Path(config).stem
        jsonl = plans / f"{name}.jsonl"
        stand_ins = stand_in_folders(root, config)
        args = [] if config == "config/config.yaml" else ["--configfile", config, *stand_ins]
        proc = subprocess.run([sys.executable, __file__, "--plan-worker", str(jsonl), "--", "--dry-run", "--forceall",
                               "--cores", "1", *args], cwd=root, env=code.env(), capture_output=True, text=True)
        (logs / f"plan_{code.label}_{name}.log").write_text(proc.stdout + proc.stderr)
        jobs = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
        result[name] = {"exit_status": proc.returncode, "jobs": jobs, "stand_ins": stand_ins,
                        "error": None if proc.returncode == 0 else (proc.stdout + proc.stderr)[-2000:]}
    shutil.rmtree(root, ignore_errors=True)
    return result


def where_strings_differ(before: str, after: str, context: int = 60) -> str:
    """The two strings around their first differing character: '...before...' -> '...after...'."""
    i = next((i for i, (x, y) in enumerate(zip(before, after)) if x != y), min(len(before), len(after)))
    cut = lambda s: ("..." if i > context else "") + s[max(0, i - context): i + context]  # noqa: E731
    return f"{cut(before)!r} -> {cut(after)!r}"


def compare_plans(before: dict, after: dict) -> dict:
    """Per config: jobs planned on each side, and whether shell commands, params and every other field agree."""
    rows = {}
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        if b is None or a is None or b["exit_status"] or a["exit_status"]:
            rows[name] = {"jobs_before": len(b["jobs"]) if b else None, "jobs_after": len(a["jobs"]) if a else None,
                          "identical": False, "shell_identical": False, "params_identical": False,
                          "diff": [f"{'before' if b is None or b['exit_status'] else 'after'} could not plan it: "
                                   + ((b or a or {}).get("error") or "config missing")[-600:]]}
            continue
        key = lambda job: tuple(sorted(job["output"]))  # noqa: E731
        jobs_b, jobs_a = {key(j): j for j in b["jobs"]}, {key(j): j for j in a["jobs"]}
        diff = [f"only before: {' '.join(k)}" for k in jobs_b.keys() - jobs_a.keys()]
        diff += [f"only after: {' '.join(k)}" for k in jobs_a.keys() - jobs_b.keys()]
        shell_same = params_same = not diff
        for k in sorted(jobs_b.keys() & jobs_a.keys()):
            for fld in jobs_b[k]:
                if jobs_b[k][fld] != jobs_a[k].get(fld):
                    shell_same &= fld != "shell"
                    params_same &= not fld.startswith("params")
                    diff.append(f"{' '.join(k)[:120]}: {fld}: "
                                f"{where_strings_differ(str(jobs_b[k][fld]), str(jobs_a[k].get(fld)))}")
        rows[name] = {"jobs_before": len(b["jobs"]), "jobs_after": len(a["jobs"]), "identical": not diff,
                      "stand_ins": sorted(set(b.get("stand_ins", [])) | set(a.get("stand_ins", []))),
                      "shell_identical": shell_same, "params_identical": params_same, "diff": diff[:40],
                      "n_differences": len(diff)}
    return rows


# --- the whole proof ---------------------------------------------------------------------------------------------

def before_run(code: Code, name: str, store: Path, logs: Path) -> dict:
    """The before code's run of one workflow, made once per store (``--reuse-before``) and reused after."""
    meta_path = store / "before.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"commit": code.commit, "runs": {}}
    if meta["commit"] != code.commit:
        sys.exit(f"{store} holds results of {meta['commit']}, not of the before code {code.commit}")
    if name in meta["runs"] and (store / "before" / name / "results").is_dir():
        print(f"before: reusing {name} from {store / 'before' / name}", flush=True)
        return meta["runs"][name]
    print(f"before: running {name}", flush=True)
    meta["runs"][name] = run_workflow(code, WORKFLOWS[name], store / "run" / name, store / "before" / name, logs)
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return meta["runs"][name]


def before_plans(code: Code, store: Path, logs: Path) -> dict:
    """The before code's plans of every shipped config, made once per store and reused after."""
    plans = store / "plans_before.json"
    if not plans.exists():
        print("before: planning every shipped config", flush=True)
        plans.write_text(json.dumps(plan_all(code, store, store / "plans" / "before", logs)))
    return json.loads(plans.read_text())


def one_workflow(codes: tuple[Code, Code], name: str, store: Path, logs: Path, result: dict) -> None:
    """Before run (or reused), replan of its folder with the after code, after run, and the comparison."""
    before_code, after_code = codes
    wf = WORKFLOWS[name]
    result["runs_before"][name] = before_run(before_code, name, store, logs)
    print(f"after: replanning {name}'s before folder", flush=True)
    result["replans"][name] = replan(store / "before" / name, after_code, wf, store / "run" / name, logs)
    print(f"after: running {name}", flush=True)
    result["runs_after"][name] = run_workflow(after_code, wf, store / "run" / name, store / "after" / name, logs)
    row = compare_results(store / "before" / name / "results", store / "after" / name / "results", codes)
    result["outputs"][name] = row
    print(f"  {name}: {row['files']} files, {row['identical']} identical, {row['normalised']} normalised only, "
          f"{row['different']} different; replan: nothing to be done: {result['replans'][name]['nothing_to_be_done']}",
          flush=True)


def markdown(result: dict) -> str:
    """docs/evidence/same_results.md: the command, the three tables and what was normalised."""
    b, a = result["before"], result["after"]
    lines = [
        "# Same results before and after", "",
        f"`{result['command']}` (tools/same_results.py), {result['date']}, {result['machine']['cpu']}, "
        f"{result['machine']['cpus']} CPUs.", "",
        f"- before: `{b['rev']}` = {b['commit']} ({b['path']})",
        f"- after: `{a['rev']}` = {a['commit']}{' + uncommitted changes' if a['dirty'] else ''} ({a['path']})", "",
        "Normalised, and only these: the recorded git commit (text files compared with each side's commit replaced "
        f"by `{COMMIT_MARK}`; checkpoints loaded with torch, every tensor compared bit for bit and every other field "
        "after removing `git_commit`; a sha256 recorded in a text file (`.sha256` sidecars, metrics.json's "
        "checkpoint hashes) when it is the hash of a file on the same side that differs only by what is normalised "
        "here), matplotlib's `/CreationDate` in PDFs (the wall clock at saving: it differs between two runs of the "
        "same code), jobs' logs (`*.log`) and Snakemake `benchmark:` timings (`*.bench.tsv`, "
        "`results/benchmarks/`). The jobs run with `GIT_DIR` at their code's checkout, so provenance records that "
        "code's commit.", "",
        "## 1. Every output file under results/", "",
        "| workflow | jobs | files compared | identical | normalised only | different | first differing paths |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["outputs"].items():
        first = "; ".join(f"`{p}` ({why[:80]})" for p, why in list(row["different_files"].items())[:3])
        kinds = ", ".join(f"{n} {k}" for k, n in row["normalised_kinds"].items())
        lines.append(f"| {name} | {result['runs_after'][name]['jobs']} | {row['files']} | {row['identical']} | "
                     f"{row['normalised']}{f' ({kinds})' if kinds else ''} | {row['different']} | {first} |")
    if any("forgetting." in p for row in result["outputs"].values() for p in row["different_files"]):
        lines += ["", "Known cause, left counted as different: the forgetting figure draws each seed's point with "
                  "seaborn's `stripplot`, whose jitter came from NumPy's unseeded global generator before issue 19 "
                  "(so it differed between two runs of the same code whenever a bar has several points); "
                  "src/clgrid/plots/figures.py now seeds it, so the figure is the same from run to run but "
                  "differs from any one draw of the old code."]
    lines += ["", "## 2. `snakemake -n` with the after code on a results folder made before", "",
              "| workflow | Nothing to be done | jobs planned (rule: reason) |", "|---|---|---|"]
    for name, row in result["replans"].items():
        planned = "; ".join(f"{j['rule']}: {j['reason']}" for j in row["planned"][:5])
        lines.append(f"| {name} | {'yes' if row['nothing_to_be_done'] else 'NO'} | {planned or '-'} |")
    lines += ["", "## 3. Every shipped config planned (`snakemake --dry-run --forceall`) by both codes", "",
              "`--forceall` plans every job of the DAG without looking for the datasets and weights these GPU-sized "
              "configs need (they are not on this machine); each job's rule, inputs, outputs, params, shell "
              "command, log, benchmark, threads, resources and conda env are taken from Snakemake's job objects "
              "and compared, job by job (keyed by outputs).", "",
              "Configs that name a dataset folder (`datasets.<name>.path`: ImageNet, which has no download) are "
              "planned with an empty stand-in folder laid over that path, the same for both codes (column "
              "stand-in).", "",
              "| config | jobs before | jobs after | shell commands identical | params identical | "
              "every field identical | stand-in |", "|---|---|---|---|---|---|---|"]
    yes = lambda flag: "yes" if flag else "NO"  # noqa: E731
    for name, row in result["plans"].items():
        lines.append(f"| {name} | {row['jobs_before']} | {row['jobs_after']} | {yes(row['shell_identical'])} | "
                     f"{yes(row['params_identical'])} | {yes(row['identical'])} | "
                     f"{', '.join(row.get('stand_ins', [])) or '-'} |")
    diffs = [(n, r) for n, r in result["plans"].items() if r["diff"]]
    for name, row in diffs:
        lines += ["", f"### {name}: differences (first {len(row['diff'])})", "", "```", *row["diff"], "```"]
    verdict = ("unfinished" if not result.get("finished") else
               "everything identical" if result["all_same"] else "DIFFERENCES FOUND")
    lines += ["", f"Verdict: **{verdict}** ({result.get('seconds', '?')} s).", ""]
    return "\n".join(lines)


def write(result: dict, args: argparse.Namespace, final: bool) -> None:
    """The JSON and the Markdown, after every workflow (marked unfinished) and at the end."""
    result["finished"] = final
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result) if final else "**Unfinished: a run in progress.**\n\n" + markdown(result)
    Path(args.md).write_text(text)
    if final:
        print(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git rev of the code before (default: %(default)s)")
    parser.add_argument("--after", default="worktree", help="git rev of the code after, or 'worktree' (default)")
    parser.add_argument("--workflows", nargs="+", choices=list(WORKFLOWS), default=list(WORKFLOWS),
                        help="the workflows to run with both codes, in this order (default: all)")
    parser.add_argument("--reuse-before", metavar="DIR",
                        help="keep the before runs and plans in DIR and reuse those already there")
    parser.add_argument("--compare-only", action="store_true",
                        help="compare the last report's folders kept in the --reuse-before DIR again, running nothing")
    parser.add_argument("--md", default=str(REPO / "docs/evidence/same_results.md"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/same_results.json"))
    return parser.parse_args()


def compare_kept(args: argparse.Namespace) -> None:
    """``--compare-only``: the last report's workflows compared again from the before and after folders kept in the
    ``--reuse-before`` DIR (e.g. after a change to this script); runs, replans and plans stay as recorded."""
    store = Path(args.reuse_before).resolve()
    result = json.loads(Path(args.out).read_text())
    codes = (Code("before", Path(result["before"]["path"]), result["before"]["commit"]),
             Code("after", Path(result["after"]["path"]), result["after"]["commit"]))
    for name in result["runs_after"]:
        result["outputs"][name] = compare_results(store / "before" / name / "results",
                                                  store / "after" / name / "results", codes)
    result["command"] += f"; compared again by python tools/same_results.py {' '.join(sys.argv[1:])}"
    result["all_same"] = (all(r["different"] == 0 for r in result["outputs"].values())
                          and all(r["nothing_to_be_done"] for r in result["replans"].values())
                          and all(r["identical"] for r in result["plans"].values()))
    write(result, args, final=result.get("finished", False))


def main() -> None:
    args = parse_args()
    if args.compare_only:
        return compare_kept(args)
    tmp = Path(tempfile.mkdtemp(prefix="same_results."))
    store = Path(args.reuse_before).resolve() if args.reuse_before else tmp
    logs = store / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    before_code = resolve("before", args.before, store)
    after_code = resolve("after", args.after, tmp)
    for code in (before_code, after_code):
        print(f"{code.label}: {code.commit} at {code.path}, jobs import {imported_from(code)}", flush=True)
    started = time.perf_counter()
    result: dict = {
        "command": "python tools/same_results.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "before": {"rev": args.before, "commit": before_code.commit, "path": str(before_code.path)},
        "after": {"rev": args.after, "commit": after_code.commit, "path": str(after_code.path),
                  "dirty": args.after == "worktree" and bool(git("status", "--porcelain", "--", "src", "workflow",
                                                                  "Snakefile", "config", cwd=after_code.path))},
        "runs_before": {}, "runs_after": {}, "outputs": {}, "replans": {}, "plans": {}, "all_same": False,
    }
    before = before_plans(before_code, store, logs)
    print("after: planning every shipped config", flush=True)
    result["plans"] = compare_plans(before, plan_all(after_code, store, store / "plans" / "after", logs))
    write(result, args, final=False)
    for name in args.workflows:
        one_workflow((before_code, after_code), name, store, logs, result)
        write(result, args, final=False)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["all_same"] = (all(r["different"] == 0 for r in result["outputs"].values())
                          and all(r["nothing_to_be_done"] for r in result["replans"].values())
                          and all(r["identical"] for r in result["plans"].values()))
    write(result, args, final=True)
    kept = [before_code.path] if args.reuse_before else []
    for code in (before_code, after_code):
        if code.made_here and code.path not in kept:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(code.path)],
                           capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if result["all_same"] else 1)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--plan-worker":
        plan_worker(sys.argv[2], sys.argv[4:] if sys.argv[3] == "--" else sys.argv[3:])
    else:
        main()
