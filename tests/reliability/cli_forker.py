"""A warm launcher of ``sentinel`` commands for the SIGKILL tests of the service.

Importing the CLI's dependencies (chromadb, pandas, ccxt, apscheduler) takes 5-15 s on
the shared machine, which would make 20+ kill-and-restart rounds last minutes. This
script imports them ONCE (before any thread exists), prints ``READY``, then serves
lines on stdin:

- ``RUN <log path> <json list of arguments>``: fork; the child redirects its stdout to
  ``<log path>`` and its stderr to ``<log path>.err`` and runs exactly ``sentinel <arguments>``
  (:func:`backend.cli.main`, the console entry point), then exits with its status. The
  parent prints ``PID <pid>``.
- ``CALL <log path> <module:function> <json list of arguments>``: the same, but the
  child runs ``function(*arguments)`` of a test helper module instead of the CLI.
- ``WAIT <pid>``: reap the child; prints ``EXIT <pid> <code>`` (``-9`` when SIGKILLed).
- ``POLL <pid>``: the same if the child has ended, else prints ``RUNNING <pid>``. A child
  once reaped keeps its code: a ``WAIT`` or ``POLL`` after that answers it again.

The children of the crash tests (:mod:`tests.reliability.crash_writer`,
:mod:`tests.reliability.crash_scheduler`) are imported here too, so a child only opens
its store: exactly what a restarted process does after its imports. The cross-process
tests' second writers (``persona_writer``, ``episode_writer``, ``store_writer``) are
started by ``CALL`` the same way. The client is
:class:`tests.reliability.forker.Forker` (the session's ``forker`` fixture).

The tests kill the printed pid themselves (``os.kill(pid, SIGKILL)``), so the killed
process is a real ``sentinel`` process in the middle of its work.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys

import backend.cli
import backend.service.jobs
import backend.service.paper
import backend.service.runtime
import backend.service.scheduler
import tests.reliability.crash_scheduler
import tests.reliability.crash_writer  # noqa: F401  (preloaded for the forks)


def _child(log: str, args: list[str], target: str | None = None) -> None:
    for target_fd, path in ((1, log), (2, log + ".err")):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, target_fd)
        os.close(fd)
    sys.stdin.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = ["sentinel", *args]
    code = 0
    try:
        if target is None:
            backend.cli.main()
        else:
            module, _, name = target.partition(":")
            getattr(importlib.import_module(module), name)(*args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    ended: dict[int, int] = {}
    """Exit codes of the children reaped so far (a WAIT after a POLL that saw the end)."""
    print("READY", flush=True)
    for line in sys.stdin:
        verb, _, rest = line.strip().partition(" ")
        if verb == "RUN":
            log, _, args = rest.partition(" ")
            pid = os.fork()
            if pid == 0:
                _child(log, [str(a) for a in json.loads(args)])
            ended.pop(pid, None)  # a reused pid: not the reaped child's code
            print(f"PID {pid}", flush=True)
        elif verb == "CALL":
            log, _, rest = rest.partition(" ")
            target, _, args = rest.partition(" ")
            pid = os.fork()
            if pid == 0:
                _child(log, [str(a) for a in json.loads(args)], target)
            ended.pop(pid, None)
            print(f"PID {pid}", flush=True)
        elif verb == "WAIT":
            pid = int(rest)
            if pid not in ended:
                ended[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            print(f"EXIT {pid} {ended[pid]}", flush=True)
        elif verb == "POLL":
            pid = int(rest)
            if pid not in ended:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done != 0:
                    ended[pid] = os.waitstatus_to_exitcode(status)
            if pid in ended:
                print(f"EXIT {pid} {ended[pid]}", flush=True)
            else:
                print(f"RUNNING {pid}", flush=True)


if __name__ == "__main__":
    serve()
