"""One function instance: a worker process running the user's handler, driven over private pipes.

The instance is the unit the platform initialises (cold start), reuses (warm invocations, several at
once with concurrency) and throws away: after a timeout the handler's thread cannot be stopped, so the
instance is reset once it is idle and the next invocation starts cold again, as on the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Set, Tuple

from fgext.emulator._config import FunctionSpec
from fgext.emulator._process import pump_lines, stop_group

__all__ = ["FUNCTION_MARKER", "FunctionInstance", "InitOutcome", "Outcome"]

FUNCTION_MARKER = "[Function]"
_WORKER = Path(__file__).resolve().parent / "_worker.py"
_SYNC = "\x1efgext-sync:"
_SYNC_WAIT_S = 1.0


class ProcessExited(Exception):
    """The worker process ended while the emulator was waiting for it."""


@dataclass(frozen=True)
class InitOutcome:
    """How the instance's initialisation (importing the handler's module) went."""

    ok: bool
    duration_ms: float
    maxrss_kb: int
    error: Optional[Dict[str, str]] = None


@dataclass(frozen=True)
class Outcome:
    """How one invocation ended: ``status`` is ``success``, ``failure`` or ``timeout``."""

    status: str
    duration_ms: float
    maxrss_kb: int
    result: Any = None
    error: Optional[Dict[str, str]] = None


class FunctionInstance:
    """The worker process and the bookkeeping to talk to it; create one per cold start."""

    def __init__(self, spec: FunctionSpec, cwd: Path, env: Mapping[str, str], python: str,
                 on_log: Callable[[str], None], on_output: Optional[Callable[[str], None]] = None,
                 keep_lines: int = 20) -> None:
        self.spec = spec
        self.cwd = cwd
        self.env = dict(env)
        self.python = python
        self.on_log = on_log
        self.on_output = on_output
        self.output: Deque[str] = deque(maxlen=keep_lines)
        self.process: Optional[asyncio.subprocess.Process] = None
        self.maxrss_kb = 0
        self.in_flight = 0
        self.poisoned = False
        self._stopped = False
        self._seq = 0
        self._pending: Dict[int, asyncio.Future[Dict[str, Any]]] = {}
        self._ready: Optional[asyncio.Future[Dict[str, Any]]] = None
        self._synced: Tuple[Set[int], Set[int]] = (set(), set())
        self._sync_changed = asyncio.Event()
        self._requests: Optional[asyncio.WriteTransport] = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self.poisoned

    async def start(self, timeout: float) -> InitOutcome:
        """Start the worker and wait for it to import the handler (the init phase)."""
        loop = asyncio.get_running_loop()
        request_r, request_w = os.pipe()
        result_r, result_w = os.pipe()
        started = loop.time()
        try:
            self.process = await asyncio.create_subprocess_exec(
                self.python, str(_WORKER), str(self.spec.path), self.spec.handler,
                str(request_r), str(result_w),
                cwd=str(self.cwd), env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                pass_fds=(request_r, result_w), start_new_session=True,
            )
        except OSError as error:
            for fd in (request_r, request_w, result_r, result_w):
                os.close(fd)
            return InitOutcome(ok=False, duration_ms=0.0, maxrss_kb=0,
                               error={"type": "OSError", "message": f"cannot start {self.python}: {error}"})
        os.close(request_r)
        os.close(result_w)
        results = asyncio.StreamReader(limit=1 << 26)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(results),
                                     os.fdopen(result_r, "rb", 0))
        self._requests, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(request_w, "wb", 0))
        self._ready = loop.create_future()
        self._ready.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._tasks = [
            asyncio.ensure_future(pump_lines(self.process.stdout, self._line_handler(0))),
            asyncio.ensure_future(pump_lines(self.process.stderr, self._line_handler(1))),
            asyncio.ensure_future(self._read_results(results)),
        ]
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            self.poisoned = True
            return InitOutcome(ok=False, duration_ms=(loop.time() - started) * 1000, maxrss_kb=0,
                               error={"type": "InitTimeout",
                                      "message": f"the handler's module did not load within {timeout:g} s"})
        except ProcessExited as exited:
            return InitOutcome(ok=False, duration_ms=(loop.time() - started) * 1000, maxrss_kb=0,
                               error={"type": "ProcessExited", "message": str(exited)})
        await self._wait_synced(0)
        self.maxrss_kb = int(ready.get("maxrss_kb") or 0)
        if not ready.get("ok"):
            self.poisoned = True
        return InitOutcome(ok=bool(ready.get("ok")), duration_ms=float(ready.get("init_ms") or 0.0),
                           maxrss_kb=self.maxrss_kb, error=ready.get("error"))

    async def invoke(self, request: Dict[str, Any], timeout: float) -> Outcome:
        """Run the handler once; the answer, a failure, or ``timeout`` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        assert self._requests is not None
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[Dict[str, Any]] = loop.create_future()
        # After a timeout nobody awaits the future; retrieve a late exception so asyncio stays quiet.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._pending[seq] = future
        self.in_flight += 1
        started = loop.time()
        try:
            self._requests.write((json.dumps({**request, "seq": seq, "timeout_s": timeout}) + "\n").encode())
            try:
                answer = await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                self.poisoned = True
                return Outcome(status="timeout", duration_ms=(loop.time() - started) * 1000,
                               maxrss_kb=self.maxrss_kb,
                               error={"type": "Timeout",
                                      "message": f"the handler ran longer than {timeout:g} s"})
            except ProcessExited as exited:
                return Outcome(status="failure", duration_ms=(loop.time() - started) * 1000,
                               maxrss_kb=self.maxrss_kb,
                               error={"type": "ProcessExited", "message": str(exited)})
            await self._wait_synced(seq)
            self.maxrss_kb = max(self.maxrss_kb, int(answer.get("maxrss_kb") or 0))
            duration = float(answer.get("duration_ms") or (loop.time() - started) * 1000)
            if answer.get("ok"):
                return Outcome(status="success", duration_ms=duration, maxrss_kb=self.maxrss_kb,
                               result=answer.get("result"))
            return Outcome(status="failure", duration_ms=duration, maxrss_kb=self.maxrss_kb,
                           error=answer.get("error"))
        finally:
            self._pending.pop(seq, None)
            self.in_flight -= 1

    async def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit, SIGTERM/SIGKILL it if it does not; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        if self._requests is not None:
            with contextlib.suppress(Exception):
                self._requests.write(b'{"op": "exit"}\n')
            self._requests.close()
            self._requests = None
        if self.process is not None:
            if self.in_flight == 0:
                # Idle: the worker leaves by itself on "exit"; SIGTERM only if it does not.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.process.wait(), 0.5)
            await stop_group(self.process, timeout)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
            for task in self._tasks:
                task.cancel()

    # ---------------------------------------------------------------------------------- plumbing

    def _line_handler(self, stream: int) -> Callable[[str], None]:
        def handle(line: str) -> None:
            while _SYNC in line:
                head, _, rest = line.partition(_SYNC)
                seq_text, _, tail = rest.partition("\x1e")
                if seq_text.isdigit():
                    self._synced[stream].add(int(seq_text))
                    self._sync_changed.set()
                line = head + tail
            if not line:
                return
            self.output.append(line)
            if self.on_output is not None:
                self.on_output(line)
            if FUNCTION_MARKER in line:
                self.on_log(line)
        return handle

    async def _wait_synced(self, seq: int) -> None:
        """Wait (briefly) until both output streams have been read up to invocation ``seq``'s end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SYNC_WAIT_S
        while not (seq in self._synced[0] and seq in self._synced[1]):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._sync_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._sync_changed.wait(), remaining)
        self._synced[0].discard(seq)
        self._synced[1].discard(seq)

    async def _read_results(self, results: asyncio.StreamReader) -> None:
        while True:
            line = await results.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("op") == "ready" and self._ready is not None and not self._ready.done():
                self._ready.set_result(message)
            elif message.get("op") == "result":
                future = self._pending.get(int(message.get("seq", -1)))
                if future is not None and not future.done():
                    future.set_result(message)
        code = await self.process.wait() if self.process is not None else None
        exited = ProcessExited(f"the function process exited with code {code}"
                               + (f"; its last output: {self.output[-1]}" if self.output else ""))
        for future in [self._ready, *self._pending.values()]:
            if future is not None and not future.done():
                future.set_exception(exited)
