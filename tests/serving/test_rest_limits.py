"""REST work per client is bounded: body size, rows while parsing, requests in flight, timeouts,
parsing off the event loop, slow clients."""

import json
import socket
import threading
import time

import httpx
import pytest
from click.testing import CliRunner

import serving.rest_json
from pipeline.cli import main
from serving.server import Limits
from tests.serving.conftest import ROWS

PREDICT = "/v1/models/ctr_cvr:predict"
RAW_BODY = {"signature_name": "serving_raw", "instances": ROWS[:3]}


def url(srv, path=PREDICT):
    return f"http://127.0.0.1:{srv.rest_port}{path}"


def slow_model(srv, monkeypatch, seconds: float):
    """Make every predict of the served version take ``seconds`` (on the worker thread)."""
    loaded = srv.registry.latest
    real = loaded.run

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(loaded, "run", slow)


def in_threads(fn, n: int) -> list:
    out = [None] * n

    def one(i):
        out[i] = fn(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_body_over_the_limit_is_413_without_reading_it(make_server):
    srv = make_server(max_body_bytes=64 * 1024)
    big = json.dumps({"instances": [{"b64": "A" * 1000}] * 100}).encode()  # ~110 KB
    t0 = time.perf_counter()
    r = httpx.post(url(srv), content=big)
    assert r.status_code == 413 and r.json()["error"].startswith("request body: larger than the limit of 65536 bytes"), r.text
    # no Content-Length (chunked): cut off at the limit while reading
    r = httpx.post(url(srv), content=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]))
    assert r.status_code == 413 and "65536" in r.json()["error"], r.text
    assert time.perf_counter() - t0 < 2
    # a 65 MB body (the probe) is refused from its Content-Length, before any of it is read
    with socket.create_connection(("127.0.0.1", srv.rest_port), timeout=5) as s:
        s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {65 * 2**20}\r\n\r\n".encode())
        head = _read_response(s)
    assert head.startswith("HTTP/1.1 413") and "--max-body-bytes" in head, head
    assert httpx.post(url(srv), json=RAW_BODY).status_code == 200


def test_the_row_limit_stops_the_parse(make_server):
    srv = make_server(max_batch=100)
    rows = ",".join(json.dumps(ROWS[i % len(ROWS)]) for i in range(101))
    # 101 valid rows, then anything: the parse stops at row 101 and never reaches the garbage
    body = '{"signature_name": "serving_raw", "instances": [' + rows + ", @@@ not json " + "x" * 100_000 + "]}"
    r = httpx.post(url(srv), content=body)
    msg = r.json()["error"]
    assert r.status_code == 400 and msg.startswith("instances: the batch exceeds the limit of 100 rows"), msg
    assert "stopped reading at row 101" in msg
    cols = '{"signature_name": "serving_raw", "inputs": {"watch": [' + ",".join(["0.5"] * 101) + ', @@@'
    msg = httpx.post(url(srv), content=cols).json()["error"]
    assert msg.startswith("inputs.watch: the batch exceeds the limit of 100 rows"), msg
    body = '{"signature_name": "serving_raw", "instances": [' + ",".join(json.dumps(ROWS[i % len(ROWS)]) for i in range(100)) + "]}"
    r = httpx.post(url(srv), content=body)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 100


def test_requests_past_the_in_flight_bound_get_503_with_retry_after(make_server, monkeypatch):
    srv = make_server(max_in_flight=2, request_timeout=10)
    slow_model(srv, monkeypatch, 1.0)
    started = time.perf_counter()

    def send(i):
        time.sleep(0.3 * (i == 2))  # the third arrives while two are in flight
        r = httpx.post(url(srv), json=RAW_BODY, timeout=10)
        return r.status_code, r.headers.get("Retry-After"), r.json(), time.perf_counter() - started

    results = sorted(in_threads(send, 3), key=lambda x: x[0])
    assert [r[0] for r in results] == [200, 200, 503], results
    busy = results[2]
    assert busy[1] == "1" and busy[2]["error"].startswith("server: 2 predict requests in flight, the limit is 2"), busy
    assert busy[3] < min(results[0][3], results[1][3])  # answered at once, not queued behind the slow ones
    # the slots are free again once the work is done
    assert httpx.post(url(srv), json=RAW_BODY, timeout=10).status_code == 200


def test_a_request_not_answered_in_time_is_504_and_its_slot_is_held_until_the_work_ends(make_server, monkeypatch):
    srv = make_server(max_in_flight=1, request_timeout=0.5)
    slow_model(srv, monkeypatch, 2.0)
    t0 = time.perf_counter()
    r = httpx.post(url(srv), json=RAW_BODY, timeout=10)
    assert r.status_code == 504 and r.json()["error"].startswith("request: not answered within 0.5 s (--request-timeout)"), r.text
    assert time.perf_counter() - t0 < 1.8  # before the model finished
    # the model is still busy with it: the bound counts that work, not just open connections
    r = httpx.post(url(srv), json=RAW_BODY, timeout=10)
    assert r.status_code == 503, r.text
    time.sleep(max(0.0, 2.2 - (time.perf_counter() - t0)))
    monkeypatch.undo()
    assert httpx.post(url(srv), json=RAW_BODY, timeout=10).status_code == 200


def test_parsing_runs_off_the_event_loop(make_server, monkeypatch):
    srv = make_server()
    real = serving.rest_json.parse_body
    parsing, parsed = threading.Event(), threading.Event()

    def slow_parse(text, max_rows):
        parsing.set()
        time.sleep(1.5)  # a huge body taking long to parse
        parsed.set()
        return real(text, max_rows)

    monkeypatch.setattr(serving.rest_json, "parse_body", slow_parse)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=httpx.post(url(srv), json=RAW_BODY, timeout=10)))
    t.start()
    assert parsing.wait(5)
    status = httpx.get(url(srv, "/v1/models/ctr_cvr"), timeout=5)
    assert status.status_code == 200 and not parsed.is_set()  # answered while the parse runs: the loop is free
    t.join()
    assert result["r"].status_code == 200


def test_a_good_request_is_not_stalled_by_oversized_ones(make_server):
    srv = make_server(max_body_bytes=256 * 1024)
    big = b'{"instances": [' + b'{"b64": "AAAA"},' * 200_000 + b'{"b64": "AAAA"}]}'  # 3.4 MB each

    def send(i):
        if i < 4:
            return httpx.post(url(srv), content=big, timeout=30).status_code
        time.sleep(0.1)
        t0 = time.perf_counter()
        r = httpx.post(url(srv), json=RAW_BODY, timeout=30)
        return r.status_code, time.perf_counter() - t0

    *bigs, good = in_threads(send, 5)
    assert bigs == [413] * 4
    assert good[0] == 200 and good[1] < 2.0, good  # (before: 54 s behind four 65 MB bodies)


def _read_response(s: socket.socket) -> str:
    """One HTTP response (head and Content-Length body) from a raw socket."""
    s.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += s.recv(65536)
    return (head + b"\r\n\r\n" + body).decode()


def _recv_all(s: socket.socket, limit: float) -> tuple[bytes, float]:
    t0, data = time.perf_counter(), b""
    s.settimeout(limit)
    try:
        while chunk := s.recv(65536):
            data += chunk
    except socket.timeout:
        pass
    return data, time.perf_counter() - t0


def test_slow_clients_are_cut_off_after_the_read_timeout(make_server):
    srv = make_server(read_timeout=0.5)
    # a body that never finishes: 408 once the read timeout passed, and the connection is closed
    with socket.create_connection(("127.0.0.1", srv.rest_port)) as s:
        s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b'{"instances": ')
        data, took = _recv_all(s, 5)
    assert data.startswith(b"HTTP/1.1 408") and b"request body: not received within 0.5 s" in data, data
    assert 0.4 < took < 3.0
    # headers that never finish: the same
    with socket.create_connection(("127.0.0.1", srv.rest_port)) as s:
        s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Le".encode())
        data, took = _recv_all(s, 5)
    assert data.startswith(b"HTTP/1.1 408") and b"request: headers not received within 0.5 s" in data, data
    assert 0.4 < took < 3.0
    # a connection that sends nothing at all
    with socket.create_connection(("127.0.0.1", srv.rest_port)) as s:
        data, took = _recv_all(s, 5)
    assert data.startswith(b"HTTP/1.1 408") and took < 2.0
    # keep-alive: after an answered request, a half-sent second head is cut off too
    body = json.dumps(RAW_BODY).encode()
    with socket.create_connection(("127.0.0.1", srv.rest_port)) as s:
        s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.2)
        s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHo".encode())
        data, took = _recv_all(s, 5)
    assert data.startswith(b"HTTP/1.1 200") and took < 2.0, (data[:200], took)
    # an ordinary client is unaffected
    assert httpx.post(url(srv), json=RAW_BODY).status_code == 200


def test_ncs_serve_exposes_the_limits_with_the_servers_defaults():
    r = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    d = Limits()
    for flag, default in (("--max-batch", d.max_batch), ("--max-body-bytes", d.max_body_bytes), ("--max-in-flight", d.max_in_flight),
                          ("--request-timeout", d.request_timeout), ("--read-timeout", d.read_timeout)):
        assert flag in r.output, flag
        assert f"default: {default}" in " ".join(r.output[r.output.index(flag):].split())[:400], (flag, default)


@pytest.mark.parametrize("bad", [["--max-body-bytes", "0"], ["--max-in-flight", "0"], ["--request-timeout", "0"], ["--read-timeout", "-1"]])
def test_ncs_serve_rejects_nonsense_limits(bad, tmp_path):
    r = CliRunner().invoke(main, ["serve", "--model-base-path", str(tmp_path), *bad])
    assert r.exit_code == 2 and bad[0] in r.output, r.output
