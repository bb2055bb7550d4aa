"""What ``ncs run`` / ``ncs daily`` print: a calm console by default, everything with ``-v``.

Quiet (the default):

- one line per finished component with its wall time (``  Transform   54.7 s``); on a terminal the
  running component shows its elapsed time on a live line until then (:class:`RunningClock`);
- the progress lines of the long steps (mask search rounds, training epochs);
- errors in full;
- nothing else on the terminal: TFX/Beam/absl INFO lines, TensorFlow's C++ start-up
  messages, ``FutureWarning``/``DeprecationWarning``s and what Beam's worker processes write
  to stderr go to a log file (``$NCS_HOME/logs/<command>-<time>.log``) named at the start.

Verbose (``-v``): every log line on the terminal, as TFX and Beam write them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, TextIO

# the progress lines worth a terminal line in quiet mode (messages of our components)
_PROGRESS = re.compile(
    r"^(MaskSearch: \d+ train rows"
    r"|MaskSearch warm-up epoch"
    r"|MaskSearch search \S+ round \d+: "
    r"|MaskSearch search \S+: chose"
    r"|MaskedTrainer: (joint )?training from"
    r"|MaskedTrainer .*epoch \d+/\d+"
    r"|ServingSmokeCheck FAILED"
    r"|Model pushed)"
)
_COMPONENT = re.compile(r"^Component (\S+) is (running|finished)\.$")
# INFO lines of the verbose mode that nobody acts on (TFX warns about its own MLMD queries)
NOISE = ("ArtifactQuery.property_predicate is not supported",)


class ComponentLines(logging.Handler):
    """A handler for the ``absl`` logger (TFX's): component wall times and progress, nothing else.

    ``write(line)`` receives each terminal line. ``Component X is running.`` starts X's clock and
    prints nothing (``clock``, when given, shows it running); ``Component X is finished.`` prints ``X``
    and its wall seconds; messages matching the progress pattern print as they are; ``ERROR`` and
    above print in full (with the traceback when there is one).
    """

    def __init__(self, write: Callable[[str], None], clock: "RunningClock | None" = None):
        super().__init__(level=logging.INFO)
        self.write = write
        self.clock = clock
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed log call must not break the run
            return
        if record.levelno >= logging.ERROR:
            if self.clock:
                self.clock.stop()
            self.write(f"{record.levelname.lower()}: {self.format(record)}")
            return
        m = _COMPONENT.match(msg)
        if m:
            name, state = m.groups()
            if state == "running":
                self.started[name] = record.created
                if self.clock:
                    self.clock.start(name)
            else:
                if self.clock:
                    self.clock.stop()
                secs = record.created - self.started.pop(name, record.created)
                self.seconds[name] = self.seconds.get(name, 0.0) + secs
                self.write(f"  {name:<32} {secs:7.1f} s")
            return
        if _PROGRESS.match(msg):
            self.write(f"    {msg}")


class RunningClock:
    """A live line with the running component's elapsed time (tqdm), on a terminal only.

    Beam's DirectRunner reports no progress a bar could count, so a component shows how long it has
    been running (``  Transform    00:34 running``), refreshed every ``interval`` seconds from a
    thread, until :meth:`stop`; the caller then prints the component's timed line. Lines given to
    :meth:`write` go above the live line. On a stream that is not a terminal (a pipe, CI, a test)
    nothing but the written lines appears.
    """

    def __init__(self, stream: TextIO, interval: float = 1.0):
        self.stream, self.interval = stream, interval
        try:
            self.enabled = bool(stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False
        self.bar = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self.stop()
        self.bar = tqdm(desc=f"  {name:<32}", bar_format="{desc} {elapsed:>7} running", file=self.stream,
                        leave=False)
        self._stopped.clear()
        self._thread = threading.Thread(target=self._tick, args=(self.bar,), daemon=True)
        self._thread.start()

    def _tick(self, bar) -> None:
        while not self._stopped.wait(self.interval):
            bar.refresh()

    def stop(self) -> None:
        if self.bar is None:
            return
        self._stopped.set()
        self._thread.join()
        self.bar.close()  # leave=False: the live line is cleared
        self.bar, self._thread = None, None

    def write(self, line: str) -> None:
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(line, file=self.stream)  # clears the live line, writes, redraws it
        else:
            _write(self.stream, line)


@contextlib.contextmanager
def console(verbose: bool, log_dir: Path, command: str, echo: Callable[[str], None]) -> Iterator[Path | None]:
    """Set up the run's console for the duration of the block; yields the log file (None when verbose).

    Quiet: fd 2 (C++ logs, Beam worker processes, which inherit it) goes to the log file while
    Python-level output (``click.echo``, this module's lines, tracebacks) stays on the terminal.
    Everything is restored on exit, also after an error.
    """
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logger = logging.getLogger("absl")
    absl_logger.setLevel(logging.INFO)
    if verbose:
        noise = _DropNoise()
        absl_logger.addFilter(noise)
        try:
            yield None
        finally:
            absl_logger.removeFilter(noise)
        return

    sys.unraisablehook = _drop_tf_shutdown_noise(sys.unraisablehook)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    echo(f"logs: {log_path} (-v prints them here)")
    env_before = {k: os.environ.get(k) for k in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # TensorFlow's C++ start-up lines, here and in Beam workers
    os.environ["PYTHONWARNINGS"] = "ignore::FutureWarning,ignore::DeprecationWarning"  # Beam workers
    with open(log_path, "a", buffering=1) as log_file, warnings.catch_warnings(), \
            _fd2_to(log_file) as terminal:
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        clock = RunningClock(terminal)
        handler = ComponentLines(clock.write, clock=clock)
        to_file = logging.StreamHandler(log_file)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        propagate, loggers = absl_logger.propagate, ("tensorflow", "apache_beam")
        levels = {n: logging.getLogger(n).level for n in loggers}
        absl_logger.propagate = False
        absl_logger.addHandler(handler)
        absl_logger.addHandler(to_file)
        for n in loggers:
            logging.getLogger(n).setLevel(logging.ERROR)
        try:
            yield log_path
        finally:
            clock.stop()
            absl_logger.removeHandler(handler)
            absl_logger.removeHandler(to_file)
            absl_logger.propagate = propagate
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)
            for k, v in env_before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _drop_tf_shutdown_noise(hook):
    """``sys.unraisablehook`` without TensorFlow's ``AtomicFunction.__del__`` errors at interpreter exit.

    When the process exits, TensorFlow's function objects are finalized after the modules they use were
    torn down, and each prints ``Exception ignored in ... AtomicFunction.__del__`` with a traceback: after
    a successful run, on the terminal. It is set for the rest of the process (the exit comes after the
    ``console`` block); every other unraisable exception still goes to ``hook``.
    """
    if getattr(hook, "drops_tf_shutdown_noise", False):
        return hook

    def quiet(unraisable):
        name = getattr(getattr(unraisable, "object", None), "__qualname__", "")
        if name == "AtomicFunction.__del__" or name.endswith(".AtomicFunction.__del__"):
            return
        hook(unraisable)

    quiet.drops_tf_shutdown_noise = True
    return quiet


class _DropNoise(logging.Filter):
    def filter(self, record):
        try:
            return not record.getMessage().startswith(NOISE)
        except Exception:  # noqa: BLE001
            return True


def _write(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


@contextlib.contextmanager
def _fd2_to(log_file) -> Iterator[TextIO]:
    """Point file descriptor 2 at ``log_file``; yields the stream for terminal lines.

    When ``sys.stderr`` is the process's real fd 2, it is replaced by a stream on a copy of the
    original descriptor, so Python output still reaches the terminal. When it is not (a test
    runner captures it), fd 2 is left alone and ``sys.stderr`` is used as is.
    """
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace")
    old_stderr = sys.stderr
    os.dup2(log_file.fileno(), 2)
    sys.stderr = terminal
    try:
        yield terminal
    finally:
        terminal.flush()
        sys.stderr = old_stderr
        os.dup2(saved, 2)
        os.close(saved)
        # handlers created inside the block (Beam's basicConfig, absl's) captured the temporary stream
        for logger in [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                               if isinstance(v, logging.Logger)]:
            for h in logger.handlers:
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is terminal:
                    h.setStream(old_stderr)
        terminal.close()
