"""The warm worker (clgrid.worker): a job run through it is the job run directly, byte for byte and exit code for
exit code; it dies with its client; edited code gets a new worker; it can be switched off; it goes away idle.

Each test's worker lives in its own $XDG_RUNTIME_DIR (a temporary folder), so no test meets another's worker or
a worker a user's grid started."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the warm worker is Linux-only (fork, pidfd)")

# The console script's entry point, as bin/clgrid runs it.
CLIENT = [sys.executable, "-c", "import sys; from clgrid.worker import main; sys.exit(main())"]
# The client, saying on stderr after the job's output whether a worker ran the job (its wait status) or this
# process did (None).
PROBE = [sys.executable, "-c", "import sys\nfrom clgrid.worker import through_worker\n"
         "status = through_worker(sys.argv[1:])\nif status is None:\n    from clgrid.cli import main\n"
         "    main(sys.argv[1:])\nprint(f'STATUS {status}', file=sys.stderr)"]


def worker_env(runtime: Path, **extra) -> dict:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO / "src"), **extra}
    for name in ("CLGRID_WORKER", "SLURM_JOB_ID"):
        env.pop(name, None)
    return {**env, **extra}


def socket_of(env: dict) -> Path:
    out = subprocess.run([sys.executable, "-c", "from clgrid.worker import socket_path; print(socket_path())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def start_worker(env: dict) -> int:
    """Start the environment's worker (the first client runs its job itself) and wait until it listens."""
    subprocess.run(CLIENT + ["methods"], env=env, capture_output=True, check=True)
    path = socket_of(env)
    wait_for(path.exists, 300, "the worker's socket")
    return int(Path(str(path) + ".lock").read_text())


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A worker that serves the module's tests, stopped at the end."""
    runtime = tmp_path_factory.mktemp("xdg")
    env = worker_env(runtime, CLGRID_WORKER_IDLE="600")
    pid = start_worker(env)
    yield env, pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it went idle already


def run(cmd, env, cwd=None):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True)


def without_usage(stderr: bytes) -> bytes:
    """A served job's stderr less the usage line the worker's child adds at its end (its CPU seconds and peak
    memory, for the cost tables: Snakemake's benchmark measures the client, not the child); asserts it is there."""
    from clgrid.worker import USAGE_PREFIX

    lines = stderr.decode().splitlines(keepends=True)
    usage = [line for line in lines if line.startswith(USAGE_PREFIX)]
    assert len(usage) == 1 and "cpu_s=" in usage[0] and "max_rss_mb=" in usage[0], stderr
    return "".join(line for line in lines if not line.startswith(USAGE_PREFIX)).encode()


def test_a_verb_through_the_worker_gives_the_direct_run_bytes_and_code(warm, tmp_path):
    env, _ = warm
    direct = run(CLIENT + ["methods"], {**env, "CLGRID_WORKER": "0"})
    served = run(PROBE + ["methods"], env)
    assert without_usage(served.stderr).decode().strip() == "STATUS 0"  # a worker ran it
    assert served.stdout == direct.stdout and direct.returncode == 0 and direct.stdout.startswith(b"every method")
    usage_direct = run(CLIENT + ["no-such-verb"], {**env, "CLGRID_WORKER": "0"})
    usage_served = run(CLIENT + ["no-such-verb"], env)
    assert usage_served.returncode == usage_direct.returncode == 2
    assert without_usage(usage_served.stderr) == usage_direct.stderr and b"invalid choice" in usage_served.stderr


def test_jobs_through_the_worker_write_the_direct_runs_bytes(warm, tmp_path, default_config):
    """A dataset, a scenario and initial weights (seeded torch ops in the forked child) are the same files."""
    from clgrid import config as cl

    env, _ = warm
    outputs = {}
    for mode, job_env in (("direct", {**env, "CLGRID_WORKER": "0"}), ("served", env)):
        folder = tmp_path / mode
        folder.mkdir()
        data, scenario, init = folder / "digits.npz", folder / "split_digits.json", folder / "init.pt"
        for argv in (["prepare-dataset", "--spec", json.dumps(cl.dataset_spec(default_config, "digits")),
                      "--out", str(data)],
                     ["prepare-scenario", "--spec", json.dumps(cl.scenario_spec(default_config, "split_digits")),
                      "--data", str(data), "--out", str(scenario)],
                     ["init", "--spec", json.dumps(cl.init_spec(default_config, "split_digits", "mlp", 0)),
                      "--scenario", str(scenario), "--out", str(init)]):
            probe = run(PROBE + argv, job_env)
            assert probe.stderr.decode().splitlines()[-1] == ("STATUS None" if mode == "direct" else "STATUS 0")
        outputs[mode] = {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
    assert outputs["served"].keys() == outputs["direct"].keys() and "init.pt" in outputs["direct"]
    for name, content in outputs["direct"].items():
        if name.endswith(".json"):  # provenance may name the output's own path: compare it relative
            content = content.replace(str(tmp_path / "direct").encode(), b"FOLDER")
            assert outputs["served"][name].replace(str(tmp_path / "served").encode(), b"FOLDER") == content, name
        else:
            assert outputs["served"][name] == content, name


def test_a_failing_verb_reports_its_code_and_stderr_through_the_worker(warm, tmp_path):
    env, _ = warm
    argv = ["tables", "--metrics", str(tmp_path / "missing.json"), "--out-dir", str(tmp_path / "tables")]
    served = run(PROBE + argv, env)
    assert served.stderr.decode().splitlines()[-1] == f"STATUS {1 << 8}"  # exit code 1, as a wait status
    client = run(CLIENT + argv, env)
    assert client.returncode == 1 and b"missing file" in client.stderr
    # The child works in the client's folder: a relative path is found (or not) where the client runs.
    (tmp_path / "here.json").write_text("{")
    relative = ["tables", "--metrics", "here.json", "--out-dir", "t"]
    direct = run(CLIENT + relative, {**env, "CLGRID_WORKER": "0"}, cwd=tmp_path)
    served = run(CLIENT + relative, env, cwd=tmp_path)
    assert served.returncode == direct.returncode == 1
    assert error_line(served.stderr) == error_line(direct.stderr) and b"missing file" not in served.stderr


def error_line(stderr: bytes) -> str:
    """The logged error without its timestamp."""
    return next(line for line in stderr.decode().splitlines() if " ERROR " in line).split(" ", 2)[2]


def test_killing_the_client_kills_its_child_and_clients_are_served_in_parallel(warm, tmp_path):
    env, worker = warm
    fifos = [tmp_path / f"fifo{i}" for i in range(2)]
    clients = []
    for fifo in fifos:  # each job blocks opening its FIFO until the test opens the other end (never)
        os.mkfifo(fifo)
        clients.append(subprocess.Popen(CLIENT + ["tables", "--metrics", str(fifo), "--out-dir", str(tmp_path)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_for(lambda: len(children(worker)) == 2, 30, "two jobs running at once")
    first, second = children(worker)
    clients[0].send_signal(signal.SIGTERM)  # forwarded: the child dies of it, and the client as the child did
    assert clients[0].wait(timeout=30) == -signal.SIGTERM
    clients[1].kill()  # SIGKILL cannot be forwarded: the worker sees the connection close
    clients[1].wait(timeout=30)
    wait_for(lambda: not alive(first) and not alive(second), 30, "the children to die")
    wait_for(lambda: children(worker) == [], 30, "the worker to reap its children")


def test_edited_code_gets_a_new_worker(tmp_path):
    package = tmp_path / "src"
    shutil.copytree(REPO / "src" / "clgrid", package / "clgrid")
    env = worker_env(tmp_path, PYTHONPATH=str(package))
    before = socket_of(env)
    source = package / "clgrid" / "metrics.py"
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert socket_of(env) != before
    assert socket_of({**env, "OMP_NUM_THREADS": "3"}) != socket_of({**env, "OMP_NUM_THREADS": "1"})
    assert socket_of({**env, "SNAKEMAKE_SOMETHING": "x"}) == socket_of(env)  # not read at start-up: shared


@pytest.mark.parametrize("off", [{"CLGRID_WORKER": "0"}, {"SLURM_JOB_ID": "42"}])
def test_the_worker_is_bypassed_when_off_or_under_slurm(tmp_path, off):
    runtime = tmp_path / "xdg"
    runtime.mkdir()
    env = worker_env(runtime, **off)
    argv = ["tables", "--metrics", str(tmp_path / "missing.json"), "--out-dir", str(tmp_path / "tables")]
    direct = run(PROBE + argv, env)  # a verb that imports no torch: fast
    assert direct.stderr.decode().splitlines()[-1] == "STATUS None" and b"missing file" in direct.stderr
    assert list(runtime.iterdir()) == []  # no socket, no lock: no worker was started


def test_an_idle_worker_exits_and_leaves_nothing(tmp_path):
    env = worker_env(tmp_path, CLGRID_WORKER_IDLE="3")
    pid = start_worker(env)
    path = socket_of(env)
    served = run(PROBE + ["methods"], env)
    assert without_usage(served.stderr).decode().strip() == "STATUS 0"
    wait_for(lambda: not alive(pid), 30, "the idle worker to exit")
    assert not path.exists()
