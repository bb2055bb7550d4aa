"""Benchmark: one daily increment (`ncs daily`) on a day of 1M impressions, on this machine.

Not a test; run by hand (``make bench-daily``), numbers go to docs/benchmarks.md.

1. generate two days; day 1 is cut to ``--setup-rows`` (the first daily run: mask search +
   first model, not measured), day 2 keeps ``--rows`` impressions;
2. ``ncs daily --date <day 1>`` (setup), then ``ncs daily --date <day 2>`` measured as a child
   process: wall time of every component (from its "is running" / "is finished" lines) and
   the peak resident memory of the whole process tree (Beam workers included) while it ran;
3. on the same day-2 Transform output and masks, the trainer twice in one process: warm start
   from day 1's blessed model (``daily.epochs``) vs from scratch (the mask search's θ, the
   configured joint epochs) — training time and the validation metrics of both.

Model compute = the trainer's training time (``train_seconds`` of the increment's Model) plus, on a refresh day,
the mask search's warm-up and search (``warmup_seconds`` + ``search_seconds`` of its TaskMasks); the table
gives its share of the increment's wall time. ``--refresh-masks`` measures a refresh day instead of the
day ``ncs daily`` decides (a reuse day, unless the day drifted).

Writes ``OUT/daily_increment.json`` and prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def tree_rss(proc) -> int:
    import psutil

    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(args: list[str], env: dict, log_path: Path) -> dict:
    """Run ``args``; per component: seconds and peak RSS (MiB) of the process tree."""
    import psutil

    comps: dict[str, dict] = {}
    current = {"name": "(start-up)", "t": time.perf_counter()}
    peak_total = {"v": 0}
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1)
        ps = psutil.Process(proc.pid)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                rss = tree_rss(ps)
                peak_total["v"] = max(peak_total["v"], rss)
                c = comps.setdefault(current["name"], {"seconds": 0.0, "peak_mib": 0.0})
                c["peak_mib"] = max(c["peak_mib"], rss / 2**20)
                stop.wait(0.25)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        for line in proc.stdout:
            log.write(line)
            m = re.search(r"Component (\S+) is (running|finished)", line)
            if m:
                now = time.perf_counter()
                name, what = m.groups()
                rss = tree_rss(ps) / 2**20  # a sample at every transition too (components shorter than a tick)
                for n in (name, current["name"]):
                    c = comps.setdefault(n, {"seconds": 0.0, "peak_mib": 0.0})
                    c["peak_mib"] = max(c["peak_mib"], rss)
                # every second of the run is booked to what was running (or to the gaps between)
                comps.setdefault(current["name"], {"seconds": 0.0, "peak_mib": 0.0})["seconds"] += now - current["t"]
                current.update(name=name if what == "running" else "(between components)", t=now)
        proc.wait()
        comps.setdefault(current["name"], {"seconds": 0.0, "peak_mib": 0.0})["seconds"] += time.perf_counter() - current["t"]
        stop.set()
        th.join()
    return {"exit_code": proc.returncode, "seconds": time.perf_counter() - t0, "peak_mib": peak_total["v"] / 2**20,
            "components": comps}


def compare_warm_vs_scratch(home: Path, config_path: str, out_dir: Path) -> dict:
    """Trainer on the latest daily run's Transform output: warm start vs from scratch."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from components.masked_trainer import train_and_export
    from pipeline.cli import _load
    from pipeline.daily import DailyLedger
    from pipeline.runner import metadata_store

    cfg = _load(config_path)
    store = metadata_store(home / "metadata" / f"{cfg.pipeline.name}.sqlite")
    trainer_type = [t for t in store.get_execution_types() if t.name.endswith("MaskedTrainer")][0]
    last = max(store.get_executions_by_type(trainer_type.name), key=lambda e: e.id)
    events = store.get_events_by_execution_ids([last.id])
    ins = store.get_artifacts_by_id([e.artifact_id for e in events if e.type == e.INPUT])
    by_type = {}
    for a in ins:
        by_type.setdefault(store.get_artifact_types_by_id([a.type_id])[0].name, []).append(a)
    examples = [a.uri for a in by_type["Examples"]]
    transform = by_type["TransformGraph"][0].uri
    masks = by_type["components.TaskMasks"][0].uri
    ledger = DailyLedger(home, cfg.pipeline.name)
    out = {"examples": examples, "masks": masks, "days": {d: r.status for d, r in sorted(ledger.records.items())}}
    if "Model" in by_type:
        base = by_type["Model"][0].uri
    else:  # the setup day's model was not blessed (tiny data): warm-start from it anyway, and say so
        models = sorted(store.get_artifacts_by_type("Model"), key=lambda a: a.id)
        base = models[-2].uri
        out["note"] = "setup model not blessed; warm start from it anyway"
    out["base_model"] = base
    for name, kwargs in (("warm start", dict(base_model_uri=base, epochs=cfg.daily.epochs)),
                         ("from scratch", dict(base_model_uri=None, epochs=None))):
        model_dir, run_dir = out_dir / name.replace(" ", "_") / "model", out_dir / name.replace(" ", "_") / "run"
        model_dir.mkdir(parents=True, exist_ok=True)  # TFX creates artifact folders; here we do
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        summary = train_and_export(cfg, examples, transform, str(model_dir), str(run_dir), masks, **kwargs)
        out[name] = {"train_seconds": summary["train_seconds"], "total_seconds": time.perf_counter() - t0,
                     "train_rows": summary["train_rows"], "valid_metrics": summary["valid_metrics"],
                     "epochs": kwargs["epochs"] or (cfg.sparse.joint_epochs or cfg.training.epochs)}
        print(f"{name}: {out[name]['train_seconds']:.0f}s, {summary['valid_metrics']}", flush=True)
    return out


def model_compute(home: Path, config_path: str, masks_before: int) -> dict:
    """Seconds of model compute in the newest run: its Model's training, and its mask search if it ran one."""
    from pipeline.cli import _load
    from pipeline.runner import metadata_store

    cfg = _load(config_path)
    store = metadata_store(home / "metadata" / f"{cfg.pipeline.name}.sqlite")
    model = max(store.get_artifacts_by_type("Model"), key=lambda a: a.id)
    out = {"train_seconds": model.custom_properties["train_seconds"].double_value, "search_seconds": 0.0}
    masks = sorted(store.get_artifacts_by_type("components.TaskMasks"), key=lambda a: a.id)
    if len(masks) > masks_before:  # a refresh day: the search ran in this run
        m = masks[-1].custom_properties
        out["search_seconds"] = m["warmup_seconds"].double_value + m["search_seconds"].double_value
    out["seconds"] = out["train_seconds"] + out["search_seconds"]
    return out


def _masks_count(home: Path, config_path: str) -> int:
    from pipeline.cli import _load
    from pipeline.runner import metadata_store

    store = metadata_store(home / "metadata" / f"{_load(config_path).pipeline.name}.sqlite")
    return len(store.get_artifacts_by_type("components.TaskMasks"))


@click.command()
@click.option("--rows", default=1_000_000, show_default=True, help="Impressions of the measured day.")
@click.option("--setup-rows", default=200_000, show_default=True, help="Impressions of the first (setup) day.")
@click.option("--config", "config_path", default=str(REPO / "configs" / "video.yaml"), show_default=True)
@click.option("--out", "out_dir", default=str(REPO / ".ncs" / "bench_daily"), show_default=True, type=click.Path(file_okay=False))
@click.option("--compare-only", is_flag=True, help="Only the warm-vs-scratch step on an existing OUT.")
@click.option("--refresh-masks", is_flag=True,
              help="Measure a refresh day (the mask search runs again on the day); give it its own --out.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override for both ncs daily runs (repeatable), e.g. --set daily.refresh.max_vocab_growth=1 "
                   "to measure a reuse day after the smaller setup day.")
@click.option("--trainer-compare/--no-trainer-compare", default=True, show_default=True,
              help="Step 3: the trainer warm vs from scratch on the measured day.")
def main(rows, setup_rows, config_path, out_dir, compare_only, refresh_masks, overrides, trainer_compare):
    out = Path(out_dir).resolve()
    data, home, serving = out / "logs", out / "home", out / "serving"
    env = {**os.environ, "NCS_HOME": str(home), "TF_USE_LEGACY_KERAS": "1", "PYTHONWARNINGS": "ignore"}
    ncs = [sys.executable, "-m", "pipeline.cli"]
    result_path = out / "daily_increment.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if not compare_only:
        out.mkdir(parents=True, exist_ok=True)
        if not (data / ".complete").exists():
            print(f"generating 2 days x {rows} impressions ...", flush=True)
            subprocess.run(ncs + ["generate", "--out", str(data), "--days", "2", "--rows-per-day", str(rows)], env=env, check=True)
            day1 = sorted(p for p in data.iterdir() if p.is_dir())[0]
            keep = -(-setup_rows // 100_000)
            for f in sorted(day1.glob("part-*.csv"))[keep:]:
                f.unlink()  # day 1 = the setup day, cut to setup_rows
            (data / ".complete").touch()
        days = sorted(p.name for p in data.iterdir() if p.is_dir())
        common = ["--config", config_path, "--data", str(data), "--serving-dir", str(serving), "--set", "daily.window_days=1"]
        for o in overrides:
            common += ["--set", o]
        print(f"setup: ncs daily --date {days[0]} (mask search + first model) ...", flush=True)
        # -v: the per-component "is running" / "is finished" lines on stdout (the quiet console prints a line per
        # component only when it ends, too late to book its memory)
        result["setup"] = run_measured(ncs + ["daily", "-v", "--date", days[0], *common], env, out / "setup.log")
        print(f"  {result['setup']['seconds']:.0f}s, exit {result['setup']['exit_code']}", flush=True)
        print(f"measured: ncs daily --date {days[1]} ({rows} impressions) ...", flush=True)
        masks_before = _masks_count(home, config_path)
        refresh = ["--refresh-masks"] if refresh_masks else []
        result["increment"] = run_measured(ncs + ["daily", "-v", "--date", days[1], *common, *refresh], env, out / "increment.log")
        result["increment"]["model_compute"] = model_compute(home, config_path, masks_before)
        print(f"  {result['increment']['seconds']:.0f}s, exit {result['increment']['exit_code']}", flush=True)
        result_path.write_text(json.dumps(result, indent=1))
    os.environ["NCS_HOME"] = str(home)
    cfg_path = config_path
    if trainer_compare:
        result["warm_vs_scratch"] = compare_warm_vs_scratch(home, cfg_path, out / "trainer_compare")
    result["rows"], result["setup_rows"], result["overrides"] = rows, setup_rows, list(overrides)
    result_path.write_text(json.dumps(result, indent=1, default=str))
    print(markdown(result))


def markdown(r: dict) -> str:
    inc = r["increment"]
    lines = ["| component | wall s | peak RSS of the process tree (MiB) |", "|---|---|---|"]
    for name, c in sorted(inc["components"].items(), key=lambda kv: -kv[1]["seconds"]):
        if c["seconds"] < 0.5 and not name.startswith("("):
            continue  # resolvers, cached and instant steps
        lines.append(f"| {name} | {c['seconds']:.0f} | {c['peak_mib']:.0f} |")
    lines.append(f"| **whole `ncs daily`** | **{inc['seconds']:.0f}** | **{inc['peak_mib']:.0f}** |")
    mc = inc.get("model_compute")
    if mc:
        lines += ["", f"model compute: {mc['seconds']:.0f} s of {inc['seconds']:.0f} s wall "
                      f"({100 * mc['seconds'] / inc['seconds']:.0f}%; training {mc['train_seconds']:.0f} s, "
                      f"mask search {mc['search_seconds']:.0f} s)"]
    if "warm_vs_scratch" not in r:
        return "\n".join(lines)
    wv = r["warm_vs_scratch"]
    lines += ["", "| trainer on the same day | epochs | train s | CTR AUC (valid) | CVR MSE (valid, clicked) |", "|---|---|---|---|---|"]
    for name in ("warm start", "from scratch"):
        x = wv[name]
        lines.append(f"| {name} | {x['epochs']} | {x['train_seconds']:.0f} | {x['valid_metrics']['ctr']['auc']:.4f} | "
                     f"{x['valid_metrics']['cvr']['mse']:.5f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
