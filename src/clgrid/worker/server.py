"""The warm worker's side: the fork server that runs the ``clgrid`` clients' jobs, imported only by the worker.

It is its own module so the client (:mod:`clgrid.worker`, run by every job) never loads it; the protocol,
the signals and the fresh-interpreter resets are described in the package's docstring and docs/speed.md.
"""

from __future__ import annotations

import os
import sys

from clgrid.worker import USAGE_PREFIX, signal_numbers

# What the worker imports before its first fork: every job's heavy libraries and the modules of the job layer
# (torch._dynamo: constructing a torch.optim optimizer imports it, ~1.8 s). A module missing here (renamed, an
# optional extra) is skipped; the child imports what it needs, as a fresh process would.
PREIMPORTS = ("torch", "torch._dynamo", "numpy", "clgrid.cli", "clgrid.doctor", "clgrid.io", "clgrid.jobs",
              "clgrid.jobs.data", "clgrid.jobs.init", "clgrid.jobs.fit", "clgrid.jobs.evaluate", "clgrid.jobs.metrics",
              "clgrid.jobs.analyze", "clgrid.spec", "clgrid.context", "clgrid.fit", "clgrid.train", "clgrid.device",
              "clgrid.batches", "clgrid.optim", "clgrid.evaluate", "clgrid.metrics", "clgrid.run_metrics",
              "clgrid.methods", "clgrid.models", "clgrid.data.datasets", "clgrid.data.scenarios",
              "clgrid.data.transforms", "clgrid.analysis.run", "clgrid.analysis.cka", "clgrid.analysis.features",
              "clgrid.analysis.probe", "clgrid.analysis.rankme", "clgrid.plots.tables", "clgrid.plots.figures",
              "clgrid.plots.analysis_figures")


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
    _report_usage()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # CPython exits through SIGINT after an uncaught KeyboardInterrupt, so the shell sees it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)



def _report_usage() -> None:
    """CPU seconds (user + system, this child's and its own children's, e.g. data-loader workers) and peak resident
    memory of the job, counted from the fork (Linux zeroes a child's CPU time at fork; its peak starts at the
    worker's size then, the libraries the job uses)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    peak_mb = max(own.ru_maxrss, children.ru_maxrss) / 1024  # KiB on Linux
    try:
        print(f"{USAGE_PREFIX} cpu_s={cpu:.3f} max_rss_mb={peak_mb:.1f}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


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
    for number in signal_numbers():
        handler = signal.getsignal(number)
        if handler is signal.SIG_IGN and number not in python_ignores:
            handler = signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL
            signal.signal(number, handler)
        if handler is not None:
            handlers[number] = handler
    return handlers


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
