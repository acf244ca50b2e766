"""The ``clgrid`` command's entry point: a thin client of a warm worker, so a grid pays torch's import once.

A grid is hundreds of small jobs and each used to pay about 2 s importing torch before its work began. The
``clgrid`` console script runs :func:`main`, which imports almost nothing (no torch, no argparse) before it
decides where the job runs:

- a **warm worker** for this exact environment is listening: the client sends it its argv, cwd, environment,
  umask, CPU affinity and its stdin/stdout/stderr file descriptors (``socket.send_fds`` over an AF_UNIX socket;
  the rules redirect ``> {log} 2>&1``, so these ARE the log files). The worker ``fork()``s; the child adopts
  all of it, resets what a fresh interpreter would have (signal handlers, warnings filters, logging, the std
  streams, numpy's global seed) and runs ``clgrid.cli.main(argv)``; the client exits with the child's status.
- no worker is listening: the client starts one (detached, its own session; torch, numpy and the job modules
  imported, no torch op run and CUDA untouched, so forking it is safe; it exits after ``CLGRID_WORKER_IDLE``
  seconds without a job, 60 by default) and runs its own job directly, as before: the first job is never slower.

The worker is off with ``CLGRID_WORKER=0``, under SLURM (``SLURM_JOB_ID`` set: one job per allocation, nothing
to share) and off Linux; any error talking to it runs the job directly, so a broken worker never fails a job.

The socket's name is a hash of everything a warm interpreter cannot change afterwards: the interpreter, its
flags and ``sys.path``, this package's location and the size and mtime of every ``.py`` file in it (edited
code never runs in a stale worker), and the environment variables read at interpreter, BLAS/OpenMP or torch
start (:data:`KEYED_VARS`, :data:`KEYED_PREFIXES`); the child still receives the client's whole environment.

Signals: the client forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT to the child (Snakemake cancelling a job kills
it as it killed the direct process); a client that vanishes (SIGKILL) makes the worker SIGKILL the child; a
worker that dies takes its children with it (``PR_SET_PDEATHSIG``), and their clients then run the job
directly. The worker reaps every child (no zombies).

This package's ``__init__`` is the client, which the console script imports; the worker's side (the fork
server, the job's reset to a fresh interpreter, the pre-imports) is :mod:`clgrid.worker.server`, imported
only by the worker process.
"""

from __future__ import annotations

import os
import sys

IDLE_S = 60.0
USAGE_PREFIX = "clgrid job usage:"
"""The last line of a job the worker ran, in its log: Snakemake's ``benchmark:`` measures the client that waits for
the worker, not this child, so the child reports its own CPU seconds and peak memory (``clgrid.cost`` reads it)."""
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
KEYED_VARS = ("LD_LIBRARY_PATH", "LD_PRELOAD", "LANG", "LANGUAGE", "TZ", "GOTO_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "MPLBACKEND", "MPLCONFIGDIR", "TRANSFORMERS_OFFLINE")
KEYED_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "CUDA_", "CUBLAS_", "CUDNN_", "NCCL_",
                  "TORCH", "PYTORCH_", "HF_", "LC_")


def main(argv: list[str] | None = None) -> int:
    """``clgrid <verb> ...``: through a warm worker when one serves this environment, else in this process."""
    argv = sys.argv[1:] if argv is None else list(argv)
    status = through_worker(argv)
    if status is not None:
        return _exit_like(status)
    from clgrid.cli import main as run_verb

    return run_verb(argv)


def enabled() -> bool:
    """Whether jobs go to a warm worker: not when asked off, not under SLURM, only where fork and fd passing are."""
    return (os.environ.get("CLGRID_WORKER", "1") != "0" and "SLURM_JOB_ID" not in os.environ
            and sys.platform == "linux" and hasattr(os, "pidfd_open"))


def environment_key() -> str:
    """A hash of what a started interpreter cannot take from a client: jobs share a worker only when it matches."""
    import hashlib

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # clgrid, this package's parent
    parts = [sys.executable, sys.version, repr(sys.flags), repr(sys._xoptions), repr(sys.warnoptions),
             repr(sys.path), package]
    for root, dirs, files in os.walk(package):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                stat = os.stat(os.path.join(root, name))
                parts.append(f"{os.path.join(root, name)}:{stat.st_mtime_ns}:{stat.st_size}")
    for name in sorted(os.environ):
        if name in KEYED_VARS or name.startswith(KEYED_PREFIXES):
            parts.append(f"{name}={os.environ[name]}")
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def socket_path() -> str:
    """The worker's socket for this environment: under $XDG_RUNTIME_DIR, else a private folder in /tmp."""
    name = f"clgrid-{environment_key()}.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime) and len(os.path.join(runtime, name)) < 100:
        return os.path.join(runtime, name)
    folder = f"/tmp/clgrid-{os.getuid()}"
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    stat = os.lstat(folder)
    if stat.st_uid != os.getuid() or stat.st_mode & 0o077:  # another user's folder: not ours to trust
        raise PermissionError(f"{folder} is not private to this user")
    return os.path.join(folder, name)


# ----------------------------------------------------------------------------------------------------- client


def through_worker(argv: list[str]) -> int | None:
    """The job's wait status when a worker ran it; None when the job must run here (off, no worker, an error)."""
    if not enabled():
        return None
    import socket

    try:
        path = socket_path()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        try:
            sock.connect(path)
        except OSError:
            _start_worker(path)
            return None
        return _send_job(sock, argv)
    except OSError:
        return None
    finally:
        sock.close()


def _send_job(sock, argv: list[str]) -> int | None:
    """Hand the job to the worker and wait for its status, forwarding signals meanwhile."""
    import marshal
    import signal
    import socket

    umask = os.umask(0o022)
    os.umask(umask)
    request = marshal.dumps({"argv": argv, "argv0": sys.argv[0], "cwd": os.getcwd(), "env": dict(os.environ),
                             "umask": umask, "affinity": sorted(os.sched_getaffinity(0)),
                             "ignored": ignored_signals()})
    socket.send_fds(sock, [len(request).to_bytes(8, "little")], [0, 1, 2])
    sock.sendall(request)
    replies = _lines(sock)
    first = next(replies, "")
    if not first.startswith("pid "):
        return None  # the worker refused or died before forking: nothing ran

    def forward(signum, frame):
        try:
            sock.sendall(f"{signum}\n".encode())
        except OSError:
            pass  # the worker is gone, and its child with it: the wait below ends

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    try:
        last = next(replies, "")
    except OSError:
        last = ""
    for name in FORWARDED:
        signal.signal(getattr(signal, name), signal.SIG_DFL if name != "SIGINT" else signal.default_int_handler)
    if last.startswith("exit "):
        return int(last.split()[1])
    # The worker died mid-job; its child died with it (PR_SET_PDEATHSIG). Outputs are written atomically, so the
    # job runs again here from the start.
    _wait_gone(int(first.split()[1]))
    os.write(2, b"clgrid: the warm worker died during this job; running it again without the worker\n")
    return None


def _lines(sock):
    """The worker's replies, one line at a time, until it closes the connection."""
    pending = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.decode()


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Until process ``pid`` has exited (or is a zombie), at most ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    return
        except OSError:
            return
        time.sleep(0.05)


def _exit_like(status: int) -> int:
    """The exit code of the child's wait status; a child killed by a signal kills this client the same way."""
    import signal

    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        sys.stdout.flush()
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def _start_worker(path: str) -> None:
    """Start a detached worker for ``path`` unless one is already starting (its lock is held)."""
    import fcntl
    from subprocess import _args_from_interpreter_flags

    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a worker holds the lock: it is still importing, or between our connect and now
    finally:
        os.close(fd)
    flags = _args_from_interpreter_flags()  # -O, -X ..., -W ...: the worker runs as this interpreter runs
    idle = float(os.environ.get("CLGRID_WORKER_IDLE", IDLE_S))
    code = f"import sys; sys.path[:] = {sys.path!r}; from clgrid.worker.server import worker_process; " \
           f"worker_process({path!r}, {idle!r})"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # an intermediate that exits at once, so the worker is nobody's child here (no zombie)
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for target in (0, 1, 2):
                    os.dup2(null, target)
                os.chdir("/")
                os.execv(sys.executable, [sys.executable, *flags, "-c", code])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def signal_numbers() -> list[int]:
    """Every signal whose handler Python can read and set (not SIGKILL/SIGSTOP, not the real-time ones it hides)."""
    import signal

    return sorted(number for number in signal.valid_signals() if number not in (signal.SIGKILL, signal.SIGSTOP)
                  and number < signal.NSIG)


def ignored_signals() -> list[int]:
    """The signals this process ignores: a fresh job inherits these from its parent, so the child does too."""
    import signal

    ignored = []
    for number in signal_numbers():
        try:
            if signal.getsignal(number) is signal.SIG_IGN:
                ignored.append(int(number))
        except (ValueError, OSError):
            continue
    return ignored
