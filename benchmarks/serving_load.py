"""Load benchmark of the local endpoint (`ncs serve`) on loopback: dense vs compacted model.

Run by hand (not a test)::

    python benchmarks/serving_load.py --model DIR_OF_SAVEDMODEL [--model DIR2 ...] \\
        --examples '.ncs/pipelines/ncs-ctr-cvr/CsvExampleGen/examples/*/Split-eval/*' [--seconds 5]

Each model is served from its own temporary base folder (version 1) by a fresh
:class:`serving.server.DevServer`; for every (batch size, concurrent clients) pair a bounded
load generator runs that many client threads for ``--seconds`` (each waits for its answer
before sending the next request: closed loop), over gRPC (``--protocol grpc``, default) or
REST. Reported: requests/s, rows/s, p50 and p99 latency. Client and server share the machine's
cores, so the numbers are a lower bound of what a separate server host would do; compare
models as ratios within one run.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import threading
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from serving.client import GrpcClient, RestClient  # noqa: E402
from serving.server import DevServer  # noqa: E402


def run_load(make_client, examples, batch: int, clients: int, seconds: float) -> dict:
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(i):
        c = make_client()
        rng = np.random.default_rng(i)
        while time.perf_counter() < stop:
            lo = int(rng.integers(0, max(1, len(examples) - batch)))
            t0 = time.perf_counter()
            try:
                c.predict_examples(examples[lo : lo + batch])
                with lock:
                    lat.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001
                with lock:
                    errors[0] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    arr = np.array(lat) * 1e3
    return {
        "requests_per_s": len(lat) / wall,
        "rows_per_s": len(lat) * batch / wall,
        "p50_ms": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "p99_ms": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
        "errors": errors[0],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="SavedModel folder (repeat to compare)")
    ap.add_argument("--examples", required=True, help="glob of gzipped tf.Example TFRecords")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    args = ap.parse_args()

    files = sorted(glob.glob(args.examples))
    examples = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(4096)]
    print(f"{len(examples)} examples; {args.protocol}; {args.seconds:.0f}s per cell; closed-loop clients on loopback")
    print(f"{'model':<28}{'batch':>6}{'clients':>8}{'req/s':>10}{'rows/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}")
    for model_dir in args.model:
        base = tempfile.mkdtemp(prefix="ncs-bench-")
        shutil.copytree(model_dir, os.path.join(base, "1"))
        srv = DevServer(base, "m", rest_port=0, grpc_port=0, poll_seconds=60, max_batch=100_000).start(wait_for_model=30)
        if args.protocol == "grpc":
            make = lambda: GrpcClient(f"127.0.0.1:{srv.grpc_port}", "m", retries=0, batch_size=100_000)  # noqa: E731
        else:
            make = lambda: RestClient(f"http://127.0.0.1:{srv.rest_port}", "m", retries=0, batch_size=100_000)  # noqa: E731
        name = os.path.basename(os.path.normpath(model_dir))[-26:]
        try:
            for batch in [int(b) for b in args.batches.split(",")]:
                for clients in [int(c) for c in args.clients.split(",")]:
                    r = run_load(make, examples, batch, clients, args.seconds)
                    print(f"{name:<28}{batch:>6}{clients:>8}{r['requests_per_s']:>10.1f}{r['rows_per_s']:>11.0f}"
                          f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>7}", flush=True)
        finally:
            srv.stop()
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
