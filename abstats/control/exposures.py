"""The exposure log of ``/assign``: an append on the request path, the database work in a writer
process.

- Request path (``ExposureLogger.log``): one ``deque.append`` of a tuple
  ``(experiment_id, variant_id, weight_epoch, unit_id, unix time)``. No lock, no wake-up of another
  thread, no formatting, no database.
- Serving process, flusher thread: every ``flush_seconds`` (at once for ``flush``/``stop``, or
  when ``batch_size`` exposures are waiting) it moves the buffer to the writer process, as JSON
  batches of at most ``batch_size`` over a pipe, with at most ``max_in_flight`` batches not yet
  acknowledged. It keeps every batch until the writer acknowledges it. When the writer process
  dies, the flusher starts another one (after a backoff) and sends the unacknowledged batches
  again: the message id ``assign:<epoch>:<unit_id>`` makes a repeat a no-op, so a crash of the
  writer loses nothing the API accepted.
- Writer process (``ExposureWriter`` in ``run_writer``: a fresh interpreter started by the
  flusher, ``python -c``, the pipe one end of a socket pair; nothing of the serving process is
  inherited, not even its ``__main__``): one exposure per (experiment, weight epoch, unit),
  recently written units are skipped before the database; a batch goes through
  ``abstats.ingest.service.store_exposures`` (COPY into a staging table, ``ON CONFLICT DO
  NOTHING``). A batch the database refuses is split in halves until the refused record is found,
  so one bad record costs only itself (counted in ``rejected``). While the database is
  unreachable the batch is retried with backoff rather than dropped.

Bounded: at most ``max_pending`` exposures are held by the serving process (buffered plus sent
and not yet acknowledged). When that is reached, ``log`` refuses the new exposure: it is counted
in ``dropped``, the flusher logs a warning, and ``/assign`` answers as usual (the log is best
effort and never slows the request path down).

Shutdown (``stop``) drains: everything buffered is handed to the writer and the acknowledgements
are awaited for up to ``drain_seconds``; then the writer process stops. Only if the database stays
unreachable for the whole drain are the exposures still held lost: counted in ``lost`` and logged
as an error.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from abstats.db.engine import is_connection_error
from abstats.ingest.service import ExposureRecord, store_exposures
from abstats.logging import get_logger

if TYPE_CHECKING:
    from abstats.control.assign import AssignmentConfig

# (experiment_id, variant_id, weight_epoch, unit_id, unix time)
Row = tuple[int, int, int, str, float]
_log = get_logger(__name__)
_STOP = b""  # the message that tells the writer process to finish and exit
# the writer imports abstats from where the serving process did: its sys.path (as multiprocessing's
# spawn does), the pipe's file descriptor after it
_WRITER_ENTRY = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from abstats.control.exposures import main; main(int(sys.argv[2]))"
)


class ExposureLogger:
    """The serving process's side: the buffer and the flusher thread (module docstring)."""

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        *,
        batch_size: int = 5_000,
        flush_seconds: float = 0.25,
        max_pending: int = 200_000,
        max_in_flight: int = 2,
        recent_size: int = 500_000,
        drain_seconds: float = 10.0,
    ) -> None:
        self._engine_factory = engine_factory
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.max_in_flight = max_in_flight
        self.recent_size = recent_size
        self.drain_seconds = drain_seconds
        self._buffer: deque[Row] = deque()
        self._unacked: dict[int, list[Row]] = {}
        self._unacked_rows = 0
        self._seq = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._restart_at = 0.0
        self._restart_delay = 0.5
        self._dropped_reported = 0
        self.written = 0  # exposures the database took (repeats of a unit and epoch included)
        self.rejected = 0  # exposures the database refused (logged one by one)
        self.dropped = 0  # refused by ``log``: the buffer was full
        self.lost = 0  # still held when a drain ran out of time (database unreachable)
        self.writer_starts = 0

    # --- the request path ------------------------------------------------------------------

    def log(self, config: AssignmentConfig, unit_id: str, variant: str) -> bool:
        """Buffer one exposure; False when the buffer is full (the exposure is dropped)."""
        if len(self._buffer) + self._unacked_rows >= self.max_pending:
            self.dropped += 1
            return False
        self._buffer.append(
            (
                config.experiment_id,
                config.variant_ids[variant],
                config.weight_epoch,
                unit_id,
                time.time(),
            )
        )
        if self._thread is None:
            self.start()
        return True

    # --- control ----------------------------------------------------------------------------

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(
                    target=self._run, name="abstats-exposure-flusher", daemon=True
                )
                self._thread.start()

    def pending(self) -> int:
        """Exposures held: buffered, or sent and not yet acknowledged."""
        return len(self._buffer) + self._unacked_rows

    @property
    def in_flight(self) -> int:
        """Exposures sent to the writer process and not yet acknowledged."""
        return self._unacked_rows

    @property
    def writer_pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything logged so far is written (or refused); False on timeout."""
        deadline = time.monotonic() + timeout
        if self._buffer and self._thread is None:
            self.start()
        with self._idle:
            while self.pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.05))
        return True

    def stop(self) -> None:
        """Drain (up to ``drain_seconds``), then stop the flusher and the writer process."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._stopping.set()
            self._wake.set()
            thread.join(timeout=self.drain_seconds + 15.0)
        elif self._buffer:  # never started: nothing can write them now
            self._give_up()
        self._thread = None

    # --- the flusher thread -----------------------------------------------------------------

    def _run(self) -> None:
        next_send = time.monotonic()
        drain_deadline: float | None = None
        try:
            while True:
                stopping = self._stopping.is_set()
                if stopping and drain_deadline is None:
                    drain_deadline = time.monotonic() + self.drain_seconds
                self._ensure_writer()
                self._receive_acks()
                now = time.monotonic()
                if (
                    stopping
                    or self._wake.is_set()
                    or len(self._buffer) >= self.batch_size
                    or now >= next_send
                ):
                    self._wake.clear()
                    self._send_buffer()
                    next_send = now + self.flush_seconds
                self._report_drops()
                if not self.pending():
                    with self._idle:
                        self._idle.notify_all()
                    if stopping:
                        return
                if drain_deadline is not None and time.monotonic() >= drain_deadline:
                    self._give_up()
                    return
                timeout = max(0.0, next_send - time.monotonic())
                conn = self._conn
                if self._unacked and conn is not None:
                    try:
                        conn.poll(timeout)  # an acknowledgement ends the wait early
                    except (OSError, EOFError):
                        self._writer_died()
                else:
                    self._wake.wait(timeout)
        except Exception:  # a bug here must not silently stop the exposure log
            _log.exception("exposure flusher failed")
            raise
        finally:
            self._stop_writer()
            with self._idle:
                self._idle.notify_all()

    def _send_buffer(self) -> None:
        while self._buffer and len(self._unacked) < self.max_in_flight:
            if self._conn is None:
                return
            count = min(len(self._buffer), self.batch_size)
            self._unacked_rows += count  # first, so that ``pending`` never undercounts
            batch = [self._buffer.popleft() for _ in range(count)]
            try:
                payload = orjson.dumps([self._seq + 1, batch])
            except orjson.JSONEncodeError:  # a unit id JSON cannot carry (a lone surrogate)
                batch, payload = self._without_unencodable(batch)
                self._unacked_rows -= count - len(batch)
            self._seq += 1
            self._unacked[self._seq] = batch
            self._send(self._seq, batch, payload)

    def _without_unencodable(self, batch: list[Row]) -> tuple[list[Row], bytes]:
        kept = []
        for row in batch:
            try:
                orjson.dumps(row)
            except orjson.JSONEncodeError:
                self.rejected += 1
                _log.error(
                    "exposure refused: its unit id is not valid text",
                    unit_id=row[3].encode("utf-8", "backslashreplace").decode()[:300],
                )
            else:
                kept.append(row)
        return kept, orjson.dumps([self._seq + 1, kept])

    def _send(self, seq: int, batch: list[Row], payload: bytes | None = None) -> None:
        if self._conn is None:
            return
        try:
            self._conn.send_bytes(payload or orjson.dumps([seq, batch]))
        except OSError:
            self._writer_died()  # the batch stays unacknowledged and is sent to the next writer

    def _receive_acks(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                seq, written, rejected = orjson.loads(conn.recv_bytes())
                batch = self._unacked.pop(seq, None)
                if batch is not None:
                    self._unacked_rows -= len(batch)
                self.written += written
                self.rejected += rejected
                self._restart_delay = 0.5  # a writer that acknowledges is healthy
        except (OSError, EOFError):
            self._writer_died()

    def _report_drops(self) -> None:
        if self.dropped != self._dropped_reported:
            _log.warning(
                "exposures dropped: the exposure buffer is full",
                dropped=self.dropped - self._dropped_reported,
                max_pending=self.max_pending,
            )
            self._dropped_reported = self.dropped

    def _give_up(self) -> None:
        held = self.pending()
        if held:
            self.lost += held
            self._buffer.clear()
            self._unacked.clear()
            self._unacked_rows = 0
            _log.error("exposures lost at shutdown: the database did not take them", lost=held)

    # --- the writer process -----------------------------------------------------------------

    def _ensure_writer(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        if self._process is not None:
            self._writer_died()
        if time.monotonic() < self._restart_at:
            return
        # the next start, should this one fail or its writer die too, waits longer (up to 30 s)
        self._restart_at = time.monotonic() + self._restart_delay
        self._restart_delay = min(self._restart_delay * 2, 30.0)
        ours, theirs = socket.socketpair()
        try:
            url = self._engine_factory().url.render_as_string(hide_password=False)
            with theirs:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _WRITER_ENTRY,
                        orjson.dumps(sys.path).decode(),
                        str(theirs.fileno()),
                    ],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
            conn = Connection(ours.detach())
            # the settings travel over the pipe: no password in the command line or environment
            conn.send_bytes(orjson.dumps({"url": url, "recent_size": self.recent_size}))
        except Exception:
            ours.close()
            _log.exception("the exposure writer process did not start; retrying")
            return
        self._process, self._conn = process, conn
        self.writer_starts += 1
        for seq in sorted(self._unacked):  # what the previous writer did not acknowledge
            self._send(seq, self._unacked[seq])

    def _writer_died(self) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            conn.close()
        if process is not None:
            try:
                process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _log.error(
                "exposure writer process ended; a new one gets the unacknowledged batches",
                exitcode=process.returncode,
                unacknowledged=self._unacked_rows,
            )

    def _stop_writer(self) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send_bytes(_STOP)
        if process is not None:
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if conn is not None:
            conn.close()


# --- the writer process ------------------------------------------------------------------------


class ExposureWriter:
    """Writes batches of ``Row`` (the writer process's work; usable in-process, e.g. in tests)."""

    def __init__(
        self,
        engine: Engine,
        *,
        recent_size: int = 500_000,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._engine = engine
        self._recent: OrderedDict[tuple[int, int, str], None] = OrderedDict()
        self._recent_size = recent_size
        self._stopping = stopping

    def write(self, rows: Sequence[Sequence[Any]]) -> tuple[int, int]:
        """Store ``rows``; returns (written, rejected). Units already written in their weight
        epoch are skipped (neither)."""
        records = []
        for experiment_id, variant_id, epoch, unit_id, ts in rows:
            marker = (experiment_id, epoch, unit_id)
            if marker in self._recent:
                continue
            self._recent[marker] = None
            if len(self._recent) > self._recent_size:
                self._recent.popitem(last=False)
            records.append(
                ExposureRecord(
                    experiment_id=experiment_id,
                    variant_id=variant_id,
                    unit_id=unit_id,
                    ts=datetime.fromtimestamp(ts, UTC),
                    message_id=f"assign:{epoch}:{unit_id}",
                )
            )
        return self._write(records)

    def _write(self, batch: list[ExposureRecord]) -> tuple[int, int]:
        """A batch the database refuses is split in halves until the record it refuses is found;
        while the database is unreachable the batch is retried with backoff (given up, and
        counted as neither written nor rejected, only when the process is stopping)."""
        if not batch:
            return 0, 0
        delay = 0.25
        while True:
            try:
                with Session(self._engine) as session, session.begin():
                    store_exposures(session, batch, source="assign")
                return len(batch), 0
            except Exception as exc:
                if not is_connection_error(exc):
                    break
                if self._stopping():
                    _log.error("exposure batch lost: database unreachable", size=len(batch))
                    return 0, 0
                _log.warning("exposure batch waits for the database", size=len(batch))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if len(batch) == 1:
            record = batch[0]
            self._forget(record)
            _log.error(
                "exposure refused by the database",
                experiment_id=record.experiment_id,
                message_id=record.message_id.encode("unicode_escape").decode()[:300],
            )
            return 0, 1
        middle = len(batch) // 2
        first = self._write(batch[:middle])
        second = self._write(batch[middle:])
        return first[0] + second[0], first[1] + second[1]

    def _forget(self, record: ExposureRecord) -> None:
        """Let a later /assign of this unit log it again."""
        epoch = int(record.message_id.split(":", 2)[1])
        self._recent.pop((record.experiment_id, epoch, record.unit_id), None)


def main(fd: int) -> None:
    """The writer process's entry (``_WRITER_ENTRY``): ``fd`` is its end of the pipe, its
    settings the first message on it."""
    conn = Connection(fd)
    options = orjson.loads(conn.recv_bytes())
    run_writer(conn, str(options["url"]), int(options["recent_size"]))


def run_writer(conn: Connection, url: str, recent_size: int) -> None:
    """The writer process: batches in, acknowledgements ``[seq, written, rejected]`` out, until
    the stop message or the end of the pipe (the serving process is gone)."""
    from abstats.config import get_settings
    from abstats.db.engine import make_engine
    from abstats.logging import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the API stops us
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json and not sys.stderr.isatty())
    engine = make_engine(url, settings=settings, pool_size=1)
    stopping = threading.Event()
    inbox: queue.Queue[bytes | None] = queue.Queue()

    def receive() -> None:
        """Always read the pipe, so the serving process never blocks on a full one."""
        try:
            while (message := conn.recv_bytes()) != _STOP:
                inbox.put(message)
        except (EOFError, OSError):
            pass
        stopping.set()
        inbox.put(None)

    threading.Thread(target=receive, name="abstats-exposure-receiver", daemon=True).start()
    writer = ExposureWriter(engine, recent_size=recent_size, stopping=stopping.is_set)
    while (message := inbox.get()) is not None:
        seq, rows = orjson.loads(message)
        written, rejected = writer.write(rows)
        with contextlib.suppress(OSError):  # the serving process is gone: write the rest, exit
            conn.send_bytes(orjson.dumps([seq, written, rejected]))
    engine.dispose()
