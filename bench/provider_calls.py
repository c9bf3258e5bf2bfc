#!/usr/bin/env python3
"""Provider call throughput: one long-lived provider process versus one process per call.

usage: provider_calls.py [--calls N] [--spawns M] [--kind random] -- PROVIDER_CMD...

Speaks ferry's provider protocol v1 (one JSON object per line on stdin/stdout, see
docs/provider-protocol.md) to PROVIDER_CMD, e.g. `target/release/ferry __provider local`:

  long-lived, sequential  one process, one handshake, then N `read` requests, each sent only
                          after the previous response arrived (what a dependent chain costs);
  long-lived, pipelined   one process, one handshake, N requests written back to back by a
                          writer thread while the main thread collects the N responses;
  spawn per call          M times: start the process, handshake, one `read`, close stdin,
                          read to EOF, reap (the process-per-call model of NixOps4). The rate
                          is M / elapsed and N calls are extrapolated linearly from it.

The call is a `read` of a `local.random` resource with fixed inputs and recorded outputs: the
provider parses and checks it and echoes the outputs, touching no file, so the figures are
protocol + process overhead. Prints one `key = value` line per figure.
"""
import argparse
import json
import subprocess
import sys
import threading
import time

HANDSHAKE = {"id": 0, "method": "handshake", "params": {"protocolVersions": [1], "ferryVersion": "bench"}}


def read_request(i, kind):
    return {
        "id": i,
        "method": "read",
        "params": {
            "kind": kind,
            "resource": "bench",
            "inputs": {"length": 16},
            "outputs": {"value": "0123456789abcdef"},
        },
    }


def line(obj):
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def check(resp, want_id):
    if resp.get("id") != want_id or "result" not in resp:
        sys.exit(f"unexpected response to request {want_id}: {resp}")


def start(cmd):
    # Buffered pipes (bufsize=0 would make readline read one byte per syscall); every write is
    # followed by a flush.
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def next_response(out):
    """Next response line, skipping events (which carry `event`)."""
    while True:
        raw = out.readline()
        if not raw:
            sys.exit("provider closed its output early")
        msg = json.loads(raw)
        if "event" not in msg:
            return msg


def handshake(p):
    p.stdin.write(line(HANDSHAKE))
    p.stdin.flush()
    check(next_response(p.stdout), 0)


def sequential(cmd, n, kind):
    p = start(cmd)
    handshake(p)
    reqs = [line(read_request(i, kind)) for i in range(1, n + 1)]
    t = time.perf_counter()
    for i, r in enumerate(reqs, 1):
        p.stdin.write(r)
        p.stdin.flush()
        check(next_response(p.stdout), i)
    elapsed = time.perf_counter() - t
    p.stdin.close()
    p.wait()
    return elapsed


def pipelined(cmd, n, kind):
    p = start(cmd)
    handshake(p)
    payload = b"".join(line(read_request(i, kind)) for i in range(1, n + 1))
    t = time.perf_counter()
    w = threading.Thread(target=lambda: (p.stdin.write(payload), p.stdin.flush()))
    w.start()
    seen = set()
    for _ in range(n):
        r = next_response(p.stdout)
        if "result" not in r:
            sys.exit(f"error response: {r}")
        seen.add(r["id"])
    elapsed = time.perf_counter() - t
    w.join()
    p.stdin.close()
    p.wait()
    if len(seen) != n:
        sys.exit(f"expected {n} distinct responses, got {len(seen)}")
    return elapsed


def spawn_per_call(cmd, m, kind):
    payload = line(HANDSHAKE) + line(read_request(1, kind))
    t = time.perf_counter()
    for _ in range(m):
        p = start(cmd)
        out, _ = p.communicate(payload)
        msgs = [json.loads(x) for x in out.splitlines() if x.strip()]
        resp = [x for x in msgs if "event" not in x]
        if sorted(x.get("id") for x in resp) != [0, 1] or not all("result" in x for x in resp):
            sys.exit(f"unexpected spawn-per-call output: {out[:300]!r}")
        if p.returncode != 0:
            sys.exit(f"provider exited with {p.returncode}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--spawns", type=int, default=500)
    ap.add_argument("--kind", default="random")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each measurement (best is kept)")
    ap.add_argument("cmd", nargs="+")
    a = ap.parse_args()
    # Best of a few repetitions: the machine is shared, and the minimum is the least disturbed.
    seq = min(sequential(a.cmd, a.calls, a.kind) for _ in range(a.repeat))
    pipe = min(pipelined(a.cmd, a.calls, a.kind) for _ in range(a.repeat))
    spawn = min(spawn_per_call(a.cmd, a.spawns, a.kind) for _ in range(a.repeat))
    spawn_rate = a.spawns / spawn
    print(f"calls = {a.calls}")
    print(f"spawns_measured = {a.spawns}")
    print(f"sequential_seconds = {seq:.4f}")
    print(f"sequential_calls_per_s = {a.calls / seq:.0f}")
    print(f"sequential_us_per_call = {1e6 * seq / a.calls:.1f}")
    print(f"pipelined_seconds = {pipe:.4f}")
    print(f"pipelined_calls_per_s = {a.calls / pipe:.0f}")
    print(f"spawn_seconds_measured = {spawn:.4f}")
    print(f"spawn_calls_per_s = {spawn_rate:.0f}")
    print(f"spawn_us_per_call = {1e6 / spawn_rate:.0f}")
    print(f"spawn_seconds_extrapolated = {a.calls / spawn_rate:.2f}")


if __name__ == "__main__":
    main()
