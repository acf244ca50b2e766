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
"""

from __future__ import annotations

import os
import sys

IDLE_S = 60.0
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
KEYED_VARS = ("LD_LIBRARY_PATH", "LD_PRELOAD", "LANG", "LANGUAGE", "TZ", "GOTO_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "MPLBACKEND", "MPLCONFIGDIR", "TRANSFORMERS_OFFLINE")
KEYED_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "CUDA_", "CUBLAS_", "CUDNN_", "NCCL_",
                  "TORCH", "PYTORCH_", "HF_", "LC_")
# What the worker imports before its first fork: every job's heavy libraries and the modules of the job layer
# (torch._dynamo: constructing a torch.optim optimizer imports it, ~1.8 s). A module missing here (renamed, an
# optional extra) is skipped; the child imports what it needs, as a fresh process would.
PREIMPORTS = ("torch", "torch._dynamo", "numpy", "clgrid.cli", "clgrid.doctor", "clgrid.io", "clgrid.jobs",
              "clgrid.train", "clgrid.evaluate", "clgrid.metrics", "clgrid.methods", "clgrid.models",
              "clgrid.data.datasets", "clgrid.data.scenarios", "clgrid.data.transforms", "clgrid.analysis.cka",
              "clgrid.analysis.features", "clgrid.analysis.probe", "clgrid.analysis.rankme", "clgrid.plots.tables",
              "clgrid.plots.figures")


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

    package = os.path.dirname(os.path.abspath(__file__))
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
                             "ignored": _ignored_signals()})
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
    code = f"import sys; sys.path[:] = {sys.path!r}; from clgrid.worker import worker_process; " \
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


# ----------------------------------------------------------------------------------------------------- worker


def worker_process(path: str, idle: float) -> None:
    """The worker's whole life; in a forked child it returns into the job instead, which exits this process."""
    job = serve(path, idle)
    if job is not None:
        _exit(job)


def _exit(job: Job) -> None:
    """Run the job and end the child as ``python -m clgrid.cli`` ends, without tearing down the warm interpreter.

    A full interpreter shutdown would touch every object the worker imported (copying the worker's ~600 MB page
    by page into the child, about a second); the child instead does what that shutdown does for a job: report
    an uncaught exception, run the ``atexit`` functions (logging's flush, finalizers), flush the std streams."""
    import atexit
    import signal

    interrupted = False
    try:
        code = _system_exit_code(job.run())  # what sys.exit(main()) in the console script makes of it
    except SystemExit as stop:
        code = _system_exit_code(stop.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code, interrupted = 1, True
    except BaseException:  # noqa: BLE001 - reported as the interpreter reports it
        sys.excepthook(*sys.exc_info())
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # CPython exits through SIGINT after an uncaught KeyboardInterrupt, so the shell sees it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _system_exit_code(code) -> int:
    """The exit status CPython gives ``SystemExit(code)``: None is 0, an int itself, anything else printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def serve(path: str, idle: float):
    """Serve jobs on ``path`` until ``idle`` seconds pass without one; returns a :class:`Job` only in a child."""
    import fcntl

    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None  # another worker serves (or is starting for) this environment
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    handlers = _default_handlers()
    _preimport()
    import warnings

    # The filters a job has after importing what the worker imported (the imports may add some, as in a job).
    fresh = {"handlers": handlers, "filters": list(warnings.filters)}
    import gc

    gc.collect()
    gc.freeze()  # the imported objects stay out of the children's collections: no copy-on-write of the heap
    return _Server(path, lock, fresh).loop(idle)


def _default_handlers() -> dict:
    """The signal handlers CPython installs at start-up, before the pre-imports could add any.

    A disposition inherited as ignored from the client that started the worker (nohup, ``cmd &``) is not kept:
    each job gets its own client's ignored signals (:meth:`Job._reset_interpreter`)."""
    import signal

    python_ignores = {signal.SIGPIPE, signal.SIGXFSZ}
    handlers = {}
    for number in _signal_numbers():
        handler = signal.getsignal(number)
        if handler is signal.SIG_IGN and number not in python_ignores:
            handler = signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL
            signal.signal(number, handler)
        if handler is not None:
            handlers[number] = handler
    return handlers


def _signal_numbers() -> list[int]:
    """Every signal whose handler Python can read and set (not SIGKILL/SIGSTOP, not the real-time ones it hides)."""
    import signal

    return sorted(number for number in signal.valid_signals() if number not in (signal.SIGKILL, signal.SIGSTOP)
                  and number < signal.NSIG)


def _ignored_signals() -> list[int]:
    """The signals this process ignores: a fresh job inherits these from its parent, so the child does too."""
    import signal

    ignored = []
    for number in _signal_numbers():
        try:
            if signal.getsignal(number) is signal.SIG_IGN:
                ignored.append(int(number))
        except (ValueError, OSError):
            continue
    return ignored


def _preimport() -> None:
    """Import what jobs import (torch, numpy, the job modules) without running a torch op or touching CUDA."""
    import importlib
    import warnings

    for module in PREIMPORTS:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a module that fails here fails (or is not needed) in the job itself
            continue


class _Server:
    """The worker's event loop: accepts jobs, forks one child per job, reports each child's wait status."""

    def __init__(self, path: str, lock: int, fresh: dict):
        import selectors
        import socket

        self.path, self.lock, self.fresh = path, lock, fresh
        self.selector = selectors.DefaultSelector()
        try:
            os.unlink(path)  # a socket left by a worker that was killed (we hold the lock: no live one)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.listener.bind(path)
        finally:
            os.umask(old)
        self.listener.listen(128)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.jobs: dict[int, dict] = {}  # pidfd -> {"pid", "conn"}

    def loop(self, idle: float):
        import time

        last = time.monotonic()
        while True:
            events = self.selector.select(timeout=max(0.0, last + idle - time.monotonic()) if not self.jobs else None)
            for key, _ in events:
                if key.data is None:
                    job = self._accept()
                    if job is not None:
                        return job  # in the child
                elif key.data[0] == "conn":
                    self._client_message(key.data[1])
                else:
                    self._child_exited(key.data[1])
            if self.jobs or events:
                last = time.monotonic()
            elif not events and time.monotonic() >= last + idle:
                self._close()
                return None

    def _accept(self):
        import marshal
        import selectors
        import socket

        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(10)
            head, fds, _, _ = socket.recv_fds(conn, 8, 3)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            payload = b""
            while 0 <= len(payload) < size:
                chunk = conn.recv(size - len(payload))
                if not chunk:
                    break
                payload += chunk
            if len(fds) != 3 or len(payload) != size:
                raise OSError("an incomplete job request")
            request = marshal.loads(payload)
        except (OSError, ValueError, EOFError, TypeError):
            for fd in fds:
                os.close(fd)
            conn.close()
            return None
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid < 0:  # the client sees the connection close before a pid: it runs the job itself
            for fd in fds:
                os.close(fd)
            conn.close()
            return None
        if pid == 0:
            return self._child(request, fds, conn, parent)
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(f"pid {pid}\n".encode())
        except OSError:
            os.kill(pid, 9)
        pidfd = os.pidfd_open(pid)
        job = {"pid": pid, "conn": conn, "pidfd": pidfd}
        self.jobs[pidfd] = job
        self.selector.register(conn, selectors.EVENT_READ, ("conn", job))
        self.selector.register(pidfd, selectors.EVENT_READ, ("child", job))
        return None

    def _client_message(self, job: dict) -> None:
        """Signals the client forwards, or its end of the connection: then the child dies with it."""
        if job["pidfd"] not in self.jobs:
            return  # reaped in this same round of events: its pid may already be someone else's
        try:
            data = job["conn"].recv(256)
        except OSError:
            data = b""
        if not data:
            os.kill(job["pid"], 9)
            self.selector.unregister(job["conn"])
            return
        for number in data.split():
            try:
                os.kill(job["pid"], int(number))
            except (ValueError, OSError):
                pass

    def _child_exited(self, job: dict) -> None:
        _, status = os.waitpid(job["pid"], 0)
        try:
            job["conn"].sendall(f"exit {status}\n".encode())
        except OSError:
            pass
        try:
            self.selector.unregister(job["conn"])
        except (KeyError, ValueError):
            pass
        self.selector.unregister(job["pidfd"])
        job["conn"].close()
        os.close(job["pidfd"])
        del self.jobs[job["pidfd"]]

    def _close(self) -> None:
        """Stop serving: the socket goes first, so a new client starts a new worker instead of waiting on this one."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.listener.close()
        self.selector.close()
        os.close(self.lock)

    def _child(self, request: dict, fds: list[int], conn, parent: int) -> Job:
        """In the forked child: drop the server's files and become the client's process."""
        _die_with(parent)
        self.listener.close()
        conn.close()
        for job in self.jobs.values():
            job["conn"].close()
            os.close(job["pidfd"])
        self.selector.close()
        os.close(self.lock)
        return Job(request, fds, self.fresh)


def _die_with(parent: int) -> None:
    """The child is killed when the worker dies (``PR_SET_PDEATHSIG``), so no job outlives its worker unseen."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


class Job:
    """A forked child turned into the client's process: its fds, cwd, environment, umask, then the verb."""

    def __init__(self, request: dict, fds: list[int], fresh: dict):
        self.request, self.fds, self.fresh = request, fds, fresh

    def run(self) -> int:
        self._adopt_process()
        self._reset_interpreter()
        from clgrid.cli import main as run_verb

        return run_verb(self.request["argv"])

    def _adopt_process(self) -> None:
        request = self.request
        for target, fd in enumerate(self.fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        try:
            os.sched_setaffinity(0, request["affinity"])
        except OSError:
            pass
        sys.argv = [request["argv0"], *request["argv"]]

    def _reset_interpreter(self) -> None:
        """What a fresh interpreter has: default signal handlers, warnings filters, no logging, new std streams."""
        import logging
        import signal
        import warnings

        for number, handler in self.fresh["handlers"].items():
            try:
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, OSError, TypeError):
                continue
        for number in self.request["ignored"]:
            signal.signal(number, signal.SIG_IGN)
        warnings.filters[:] = self.fresh["filters"]
        warnings._filters_mutated()
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        _reopen_std_streams()
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed()  # a fresh process seeds numpy's global generator from the OS; forks would share it


def _reopen_std_streams() -> None:
    """sys.stdin/stdout/stderr on the adopted fds 0, 1, 2, buffered as CPython buffers them at start-up."""
    import io

    old = {"stdin": sys.stdin, "stdout": sys.stdout, "stderr": sys.stderr}
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        template = old[name]
        encoding = getattr(template, "encoding", None) or "utf-8"
        errors = getattr(template, "errors", None) or "strict"
        if name == "stdin":
            raw = io.FileIO(fd, "r", closefd=False)
            stream = io.TextIOWrapper(io.BufferedReader(raw), encoding, errors, line_buffering=False)
        else:
            raw = io.FileIO(fd, "w", closefd=False)
            unbuffered = bool(getattr(template, "write_through", False))  # python -u, PYTHONUNBUFFERED
            line = name == "stderr" or raw.isatty()
            stream = io.TextIOWrapper(raw if unbuffered else io.BufferedWriter(raw), encoding, errors,
                                      line_buffering=line, write_through=unbuffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


if __name__ == "__main__":
    sys.exit(main())
