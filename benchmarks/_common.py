"""What the benchmark scripts share: the machine description every result file carries, and workflow copies."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "envs", "profiles")


def machine() -> dict:
    """Platform, CPU model, cores and the versions that set the speed."""
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in ("torch", "numpy", "snakemake"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing package is just not listed
            pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpus": os.cpu_count(), **versions}


def copy_workflow(code: Path, dest: Path) -> Path:
    """The Snakefile, rules, configs, envs and profiles of the checkout ``code`` in ``dest`` (no results)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_PARTS:
        src = code / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def checkout(rev: str, dest: Path) -> Path:
    """A detached worktree of this repository at ``rev`` (the code "before"), made once."""
    if not (dest / "src").exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(dest), rev], check=True,
                       capture_output=True)
    return dest


def code_env(code: Path) -> dict:
    """An environment whose ``clgrid`` (CLI and package) is the one in ``code``/src, with this interpreter.

    The ``clgrid`` first on PATH is the console script ``code``'s own pyproject.toml declares (since issue 19
    ``clgrid.worker:main``, the warm worker's client; before it ``clgrid.cli:main``), written for this
    interpreter: the installed bin/clgrid is the entry point of whichever checkout was installed last."""
    return {**os.environ, "PYTHONPATH": str(code / "src"), "HF_HUB_OFFLINE": "1",
            "PATH": os.pathsep.join([str(console_script(code)), os.path.dirname(sys.executable),
                                     os.environ.get("PATH", "")])}


def console_script(code: Path) -> Path:
    """A folder holding ``clgrid`` as ``code``'s pyproject.toml declares it, run by this interpreter."""
    import hashlib
    import tempfile
    import tomllib

    entry = tomllib.loads((code / "pyproject.toml").read_text())["project"]["scripts"]["clgrid"]
    module, function = entry.split(":")
    tag = hashlib.sha256(f"{sys.executable}\0{entry}".encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"clgrid-bench-bin-{tag}"
    folder.mkdir(exist_ok=True)
    script = folder / "clgrid"
    text = f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
    if not script.exists() or script.read_text() != text:
        tmp = folder / f".clgrid.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(script)
    return folder


def stop_workers(runtime: Path) -> None:
    """Stop the warm workers whose sockets are in ``runtime`` (their lock files hold their pids)."""
    import signal

    for lock in runtime.glob("clgrid-*.sock.lock"):
        try:
            os.kill(int(lock.read_text().strip()), signal.SIGTERM)
        except (ValueError, OSError):
            continue


class Worker:
    """A benchmark script run again as a worker process whose ``clgrid`` is the one in ``src`` (one checkout per
    worker: before and after cannot share a process); requests and answers are JSON lines on stdin and stdout.

    The worker's first line says where it imported clgrid from, checked here against ``src``."""

    def __init__(self, script: str, src: Path, args: list[str], threads: int = 1):
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, script, "--worker", *args], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())
        if Path(self.info["clgrid"]).resolve() != (src / "clgrid").resolve():
            raise RuntimeError(f"the worker for {src} imported clgrid from {self.info['clgrid']}")

    def run(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"a benchmark worker died running {request}")
        return json.loads(answer)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
