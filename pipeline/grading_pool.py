"""math-verify where it can be stopped: a shape guard, and worker processes killed and replaced on a deadline.

`pathological(text)` refuses, by shape alone, answers whose value explodes in sympy (see its docstring);
`grading` calls it before any worker sees an answer. What it misses is stopped by the kill below.

A Python thread cannot be stopped, and sympy computes `9**(999**3)` or `362880!` in one C call holding the
GIL, so neither a thread join nor a signal timer bounds it. Here each comparison runs in a worker process;
the caller polls the worker's pipe and, past the deadline, kills the worker (SIGKILL) and starts its
replacement at once, so the next call finds a warm worker and nothing stays stuck.

- Workers are plain `python -m pipeline.grading_pool` subprocesses (fork+exec, no Python code runs
  between the two, so safe in threaded processes and Ray actors; no `multiprocessing`, which would
  re-import the caller's `__main__`). They speak one JSON line per request/reply over stdin/stdout and only
  run the named tasks in `TASKS` (nothing is pickled, nothing is evaluated).
- Lazily started (none until the first math-verify call), at most `max_workers` (env
  `RESTMCTS_GRADING_WORKERS`, default 2), safe to call from many threads at once: a caller takes an idle
  worker, starts one when under the cap, or waits for one, up to the caller's timeout (restarted while
  callers wait for a worker to import sympy); past it the call is "busy", transient, never sticky. So a
  call returns within its timeout plus queueing and start-ups, and the computation itself never overruns.
- A worker's start-up (importing sympy, 0.5-2 s) is never counted against a comparison's deadline.
- Cleaned up at exit (atexit), reset in forked children (they must not share the parent's pipes); a worker
  exits on end of input (its parent died) and, as a backstop, a per-request CPU rlimit kills it even when
  its parent was SIGKILLed in the middle of a runaway computation.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0  # seconds a worker may take to import math-verify and say it is ready
CPU_BACKSTOP = 10  # extra CPU seconds a worker may burn on one request before the kernel kills it
MAX_PARSE_CHARS = 2_000  # `parse` looks at the end of a text only
NOT_STARTED = "grading worker did not start"
AVAILABLE = hasattr(select, "poll")  # POSIX; elsewhere grading runs in-process

# ------------------------------------------------------------------------------------------ the tasks

_api: tuple[Any, Any, Any] | None = None


class _DropTimeoutWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def load_math_verify() -> tuple[Any, Any, Any]:
    """Import math-verify (sympy) and build its LaTeX parser once: a cold start takes about a second."""
    global _api
    if _api is None:
        from math_verify import LatexExtractionConfig, parse, verify

        for name in ("math_verify.parser", "math_verify.grader"):  # our deadline replaces its signal one
            log = logging.getLogger(name)
            if not any(isinstance(f, _DropTimeoutWarning) for f in log.filters):
                log.addFilter(_DropTimeoutWarning())
        parse("$1/2$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
        _api = (LatexExtractionConfig, parse, verify)
    return _api


def verify_equal(gold: str, predicted: str) -> bool:
    """math-verify on LaTeX only (its expression extractor evaluates Python), no time limit of its own."""
    latex_config, parse, verify = load_math_verify()
    config = [latex_config()]
    gold_parsed = parse(f"${gold}$", extraction_config=config, parsing_timeout=None)
    pred_parsed = parse(f"${predicted}$", extraction_config=config, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def parse_answer(text: str) -> str | None:
    """The answer math-verify's LaTeX extractor finds in `text` ($...$, \\(...\\), "final answer is"), as
    text; the right-hand side of an equation ("x = 5" -> "5"); None when it finds none."""
    latex_config, parse, _ = load_math_verify()
    found = parse(text[-MAX_PARSE_CHARS:], extraction_config=[latex_config()], parsing_timeout=None)
    if len(found) < 2 or not str(found[1]).strip():
        return None
    return str(found[1]).rsplit("=", 1)[-1].strip() or None


TASKS = {"verify": verify_equal, "parse": parse_answer, "ping": lambda: True}

# ------------------------------------------------------------------------------------ the shape guard

MAX_EXPONENT = 999  # largest exponent (product of the integers in it) of a number
MAX_GROUP_EXPONENT = 30  # ... of a parenthesised expression: (x+y+z)^{999} expands to 500,000 terms
MAX_NESTED_EXPONENT = 10  # ... of an expression holding a power or factorial: (9^{999})^{999}
MAX_FACTORIAL = 999
_GROWS = re.compile(r"\^|!|\\(?:[dt]?binom|choose|Gamma|sum|prod|operatorname)")
_BIG_ARGUMENT = re.compile(
    r"\\(?:[dt]?binom|choose|Gamma|sum|prod|operatorname)[\s\S]*\d{5}|\d{5}[\s\S]*\\choose", re.I
)
_CLOSE, _OPEN = ")}]", "({["


def _operand_before(text: str, end: int) -> str:
    """The operand ending just before `end`: a bracketed group (matched backwards) or a token."""
    j = end - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    if j < 0:
        return ""
    if text[j] in _CLOSE:
        depth, k = 0, j
        while k >= 0:
            depth += (text[k] in _CLOSE) - (text[k] in _OPEN)
            if depth == 0:
                break
            k -= 1
        return text[max(k, 0) : j + 1]
    k = j
    while k >= 0 and (text[k].isalnum() or text[k] in ".\\"):
        k -= 1
    return text[k + 1 : j + 1]


def _exponent_after(text: str, start: int) -> str:
    rest = text[start:].lstrip()
    if rest.startswith("{"):
        depth = 0
        for i, char in enumerate(rest):
            depth += (char == "{") - (char == "}")
            if depth == 0:
                return rest[1:i]
        return rest[1:]
    token = re.match(r"\d+|\\[a-zA-Z]+|.?", rest)
    return token.group(0) if token else ""


def _size(exponent: str) -> float:
    """Bound on an exponent's value: the product of the integers in it; infinite when it grows itself."""
    if _GROWS.search(exponent):
        return float("inf")
    size = 1.0
    for number in re.findall(r"\d+", exponent):
        size *= max(int(number[:12]), 1) * 10.0 ** max(len(number) - 12, 0)
    return size


def pathological(text: str) -> bool:
    """Shapes whose value explodes in sympy (powers of powers, big exponents, nested or big factorials,
    binomials/Gamma/sums/products of 5-digit numbers); the worker kill covers what this misses."""
    if _BIG_ARGUMENT.search(text) or re.search(r"!\s*!\s*!", text):
        return True
    for found in re.finditer(r"\^|!", text):
        base = _operand_before(text, found.start())
        grouped = base[:1] in _OPEN or base.endswith(tuple(_CLOSE))
        nested = grouped and bool(_GROWS.search(base))
        if found.group(0) == "!":
            numbers = [int(n[:6]) if len(n) < 6 else MAX_FACTORIAL + 1 for n in re.findall(r"\d+", base)]
            if nested or any(n > MAX_FACTORIAL for n in numbers):
                return True
            continue
        size = _size(_exponent_after(text, found.end()))
        symbolic = grouped and bool(re.search(r"[a-zA-Z+\-*/]", base))
        limit = MAX_NESTED_EXPONENT if nested else MAX_GROUP_EXPONENT if symbolic else MAX_EXPONENT
        if size > limit:
            return True
    return False


# ----------------------------------------------------------------------------------------- the worker


def _serve() -> None:
    """Worker loop: one JSON request per stdin line, one JSON reply per stdout line; exits on EOF."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    logging.disable(logging.ERROR)  # sympy/math-verify complaints about odd input: expected, not news
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    load_math_verify()
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        _cpu_backstop(float(request.get("timeout", 1.0)))
        try:
            reply = {"ok": True, "value": TASKS[request["task"]](*request["args"])}
        except Exception as error:  # a sympy bug on odd input is an expected outcome
            reply = {"ok": False, "error": f"{type(error).__name__}: {str(error)[:200]}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _cpu_backstop(timeout: float) -> None:
    try:
        import resource

        used = resource.getrusage(resource.RUSAGE_SELF)
        limit = int(used.ru_utime + used.ru_stime + timeout) + CPU_BACKSTOP
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        if hard == resource.RLIM_INFINITY or limit <= hard:
            resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
    except (ImportError, ValueError, OSError):  # not on this platform: the parent's kill still works
        pass


# ------------------------------------------------------------------------------------------- the pool


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # the folder holding `pipeline/`
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.grading_pool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=root,  # so that no other `pipeline` package in the caller's folder shadows this one
            bufsize=0,
        )
        self.ready = False
        self._buffer = b""

    def read_line(self, seconds: float) -> dict[str, Any] | None:
        """The next reply line, or None when none came within `seconds` (or the worker died)."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + seconds
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the worker died
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        for close in (self.proc.stdin, self.proc.stdout):
            try:
                close.close()  # type: ignore[union-attr]
            except OSError:
                pass
        self.proc.kill()
        try:
            self.proc.wait(1.0)
        except subprocess.TimeoutExpired:  # reaped later by subprocess' own clean-up
            pass


class GradingPool:
    """Runs `TASKS` in worker processes with a hard deadline. Thread-safe; see the module docstring."""

    def __init__(self, max_workers: int = 2) -> None:
        self.max_workers = max(1, max_workers)
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._live = 0  # workers that exist: idle, in use, or starting
        self._warming = 0  # callers waiting for a worker to finish importing
        self._closed = False

    def call(self, task: str, args: tuple[Any, ...], timeout: float) -> tuple[str, Any]:
        """("ok", value) | ("timeout", None) | ("error", message) | ("busy", None)."""
        worker = self._acquire(timeout)
        if worker is None:
            return "busy", None
        try:
            outcome = self._run(worker, task, args, timeout)
        except BaseException:  # e.g. KeyboardInterrupt mid-call: the worker's state is unknown
            self._discard(worker, replace=True)
            raise
        if outcome[0] == "ok" or (outcome[0] == "error" and worker.ready and worker.proc.poll() is None):
            self._release(worker)
        else:  # past the deadline, dead, or never ready: kill it, start its replacement now
            self._discard(worker, replace=worker.ready)
        return outcome

    def _run(self, worker: _Worker, task: str, args: tuple[Any, ...], timeout: float) -> tuple[str, Any]:
        if not worker.ready:
            with self._cond:
                self._warming += 1
            try:
                worker.ready = (worker.read_line(STARTUP_TIMEOUT) or {}).get("ready", False)
            finally:
                with self._cond:
                    self._warming -= 1
            if not worker.ready:
                return "error", NOT_STARTED
        request = json.dumps({"task": task, "args": list(args), "timeout": timeout}) + "\n"
        try:
            worker.proc.stdin.write(request.encode())  # type: ignore[union-attr]
            reply = worker.read_line(timeout)
        except (OSError, ValueError):
            reply = None
        if reply is None:
            return ("error", "grading worker died") if worker.proc.poll() is not None else ("timeout", None)
        return ("ok", reply["value"]) if reply.get("ok") else ("error", reply.get("error"))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.kill()

    def _acquire(self, timeout: float) -> _Worker | None:
        wait_until = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                if self._idle:
                    return self._idle.pop()
                if self._live < self.max_workers:
                    self._live += 1
                    try:
                        return _Worker()
                    except OSError:
                        self._live -= 1
                        raise
                if self._warming:  # waiting on a sympy import is not the comparison's time
                    wait_until = max(wait_until, time.monotonic() + timeout)
                remaining = wait_until - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
        return None

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                self._live -= 1
            else:
                self._idle.append(worker)
                self._cond.notify()
                return
        worker.kill()

    def _discard(self, worker: _Worker, replace: bool) -> None:
        worker.kill()
        with self._cond:
            self._live -= 1
            if replace and not self._closed:
                try:  # started now, importing while nobody waits for it
                    self._idle.append(_Worker())
                    self._live += 1
                except OSError:
                    logger.warning("could not start a replacement grading worker", exc_info=True)
            self._cond.notify()


_pool: GradingPool | None = None
_pool_lock = threading.Lock()


def default_pool() -> GradingPool:
    """The process-wide pool, created on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = GradingPool(int(os.environ.get("RESTMCTS_GRADING_WORKERS", "2")))
        return _pool


def shutdown() -> None:
    """Kill this process's grading workers (idle ones now, busy ones when their call returns)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


def _forget_after_fork() -> None:  # a forked child must not talk to its parent's workers
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

if __name__ == "__main__":
    _serve()
