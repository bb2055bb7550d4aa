"""The quiet console of `ncs run` / `ncs daily`: component lines, progress, errors; the rest to a log file."""

import io
import logging
import subprocess
import sys
import textwrap

from pipeline.console import ComponentLines, RunningClock
from tests.conftest import REPO


def _record(msg, level=logging.INFO, created=0.0, exc_info=None):
    r = logging.LogRecord("absl", level, __file__, 1, msg, None, exc_info)
    r.created = created
    return r


def test_component_lines_keep_wall_times_progress_and_errors():
    lines = []
    h = ComponentLines(lines.append)
    h.handle(_record("Component Transform is running.", created=100.0))
    h.handle(_record("Beam stage AnalyzeDataset/... done", created=101.0))  # INFO noise: dropped
    h.handle(_record("MaskSearch search ctr round 1: density 0.548 -> valid auc 0.49479", created=110.0))
    h.handle(_record("MaskSearch search ctr round 1 epoch 1/1: ctr loss 0.6 (15 steps, 0.4s)", created=111.0))  # inner epoch
    h.handle(_record("Component Transform is finished.", created=154.7))
    try:
        raise ValueError("boom in the trainer")
    except ValueError:
        h.handle(_record("Component MaskedTrainer failed", level=logging.ERROR, exc_info=sys.exc_info()))
    assert lines[0] == "    MaskSearch search ctr round 1: density 0.548 -> valid auc 0.49479"
    assert lines[1].split() == ["Transform", "54.7", "s"]
    assert lines[2].startswith("error: Component MaskedTrainer failed") and "Traceback" in lines[2]
    assert "ValueError: boom in the trainer" in lines[2]
    assert len(lines) == 3
    assert h.seconds == {"Transform": 154.7 - 100.0}


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run_transform(clock, lines_seen_while_running):
    h = ComponentLines(clock.write, clock=clock)
    h.handle(_record("Component Transform is running.", created=100.0))
    lines_seen_while_running.append(clock.stream.getvalue())
    h.handle(_record("MaskedTrainer epoch 1/2: ctr loss 0.5", created=101.0))
    h.handle(_record("Component Transform is finished.", created=130.0))
    return h


def test_running_clock_shows_the_running_component_on_a_terminal_only():
    tty, seen = _Terminal(), []
    clock = RunningClock(tty, interval=0.01)
    _run_transform(clock, seen)
    assert "Transform" in seen[0] and "00:00 running" in seen[0]  # the live line while it runs
    assert clock.bar is None and clock._thread is None  # stopped when the component finished
    out = tty.getvalue()
    # the progress line went above the live line, then the live line was cleared for the timed line
    assert out.index("MaskedTrainer epoch 1/2") < out.rindex("Transform")
    assert out.rstrip("\n").rsplit("\r", 1)[-1].split() == ["Transform", "30.0", "s"]

    pipe, seen = io.StringIO(), []
    _run_transform(RunningClock(pipe), seen)
    assert seen == [""]
    assert pipe.getvalue().splitlines() == ["    MaskedTrainer epoch 1/2: ctr loss 0.5", f"  {'Transform':<32} {30.0:7.1f} s"]


def test_quiet_console_sends_c_level_output_children_and_warnings_to_the_log(tmp_path):
    """In a real process: fd 2 writes, a child process's stderr and FutureWarnings land in the log file;
    component lines and Python-level errors reach the terminal; fd 2 is restored afterwards."""
    script = textwrap.dedent(f"""
        import logging, os, subprocess, sys, warnings
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from pipeline.console import console
        log = logging.getLogger("absl")
        with console(False, Path({str(tmp_path)!r}), "run", print) as path:
            os.write(2, b"E external/local_xla cuFFT factory noise\\n")
            subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('Exception ignored in AtomicFunction\\\\n')"])
            warnings.warn("old google api", FutureWarning)
            log.info("Component Pusher is running.")
            log.info("Validation complete for split train.")
            log.info("Component Pusher is finished.")
            log.error("ServingSmokeCheck FAILED: rank_score negative")
            print("still on stdout")
            logging.basicConfig()  # a handler created inside the block (Beam does this) ...
        logging.getLogger("late").warning("logged after the block")  # ... still writes afterwards
        os.write(2, b"after the block\\n")
        print("LOG=" + str(path))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    terminal = p.stdout + p.stderr
    for hidden in ("cuFFT", "AtomicFunction", "FutureWarning", "Validation complete", "INFO"):
        assert hidden not in terminal, (hidden, terminal)
    assert "Pusher" in p.stderr and " s\n" in p.stderr
    assert "error: ServingSmokeCheck FAILED: rank_score negative" in p.stderr
    assert "still on stdout" in p.stdout and "after the block" in p.stderr  # fd 2 restored
    assert "logged after the block" in p.stderr and "Logging error" not in p.stderr
    log_path = next(line[4:] for line in p.stdout.splitlines() if line.startswith("LOG="))
    log_text = open(log_path).read()
    assert "cuFFT factory noise" in log_text and "AtomicFunction" in log_text
    assert "Validation complete for split train." in log_text


def test_tf_shutdown_noise_is_dropped_and_other_unraisable_errors_are_not():
    import types

    from pipeline.console import _drop_tf_shutdown_noise

    class AtomicFunction:
        def __del__(self):
            pass

    seen = []
    hook = _drop_tf_shutdown_noise(seen.append)
    assert _drop_tf_shutdown_noise(hook) is hook  # installed once per process, not nested per command
    hook(types.SimpleNamespace(object=AtomicFunction.__del__, exc_value=TypeError("'NoneType' object")))
    other = types.SimpleNamespace(object=print, exc_value=ValueError("x"))
    hook(other)
    assert seen == [other]
