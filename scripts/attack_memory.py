#!/usr/bin/env python3
"""Memory of the server under two body attacks (docs/security.md#request-bodies).

    scripts/attack_memory.py [path/to/connect-keeper]   (default: target/release/connect-keeper)

Starts the binary on 127.0.0.1 with a fresh SQLite database and reads its peak resident memory
(VmHWM in /proc/<pid>/status) after each phase:

1. idle, after start-up;
2. gzip bombs: 8 clients at once, each POST /installed with `Content-Encoding: gzip` and a
   ~1 MB body that expands to 1,000 MiB, 5 rounds (40 bombs);
3. slow bodies: 40 connections that announce 1 MiB on POST /installed, send 960 KB and stall;
   the script waits until the server has closed all of them (or 30 s) and reports how long that
   took and what the server answered.

Prints one line per phase. Needs only the Python standard library.
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib


def hwm_kib(pid):
    """(peak, current) resident memory of `pid` in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    return values["VmHWM"], values["VmRSS"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def bomb():
    # 1,000 MiB of zeros, compressed in pieces so the script itself stays small.
    chunk = b"0" * (1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    parts = [comp.compress(b'{"a":"')]
    for _ in range(1000):
        parts.append(comp.compress(chunk))
    parts.append(comp.compress(b'"}'))
    parts.append(comp.flush())
    return b"".join(parts)


def post_bomb(port, body, answers):
    head = (
        "POST /installed HTTP/1.1\r\nHost: keeper.test\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        try:
            s.sendall(body)
        except OSError:
            pass  # the server answered and closed before the whole body was sent
        try:
            answers.append(s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace"))
        except OSError as e:
            answers.append(f"error: {e}")


def stall(port, results):
    head = (
        "POST /installed HTTP/1.1\r\nHost: keeper.test\r\nContent-Type: application/json\r\n"
        "Content-Length: 1048576\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head + b" " * 960_000)
        data = b""
        try:
            while True:
                got = s.recv(4096)
                if not got:
                    break
                data += got
        except OSError:
            pass
    first = data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed without an answer"
    results.append((time.monotonic() - started, first))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/release/connect-keeper")
    work = tempfile.mkdtemp()
    port = free_port()
    env = {
        "DATABASE_URL": f"sqlite://{work}/attack.db",
        "BIND_ADDR": f"127.0.0.1:{port}",
        "APP_BASE_URL": f"http://127.0.0.1:{port}",
        "RUST_LOG": "error",
        "PATH": os.environ.get("PATH", ""),
    }
    server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)
        hwm, rss = hwm_kib(server.pid)
        print(f"idle:        VmHWM {hwm / 1024:.1f} MiB, VmRSS {rss / 1024:.1f} MiB")

        body = bomb()
        answers = []
        started = time.monotonic()
        for _ in range(5):
            threads = [threading.Thread(target=post_bomb, args=(port, body, answers)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elapsed = time.monotonic() - started
        hwm, rss = hwm_kib(server.pid)
        kinds = sorted(set(answers))
        print(
            f"gzip bombs:  VmHWM {hwm / 1024:.1f} MiB, VmRSS {rss / 1024:.1f} MiB after {len(answers)} bombs "
            f"of {len(body) / 1e6:.2f} MB (1,000 MiB decoded) in {elapsed:.1f} s; answers: {kinds}"
        )

        results = []
        threads = [threading.Thread(target=stall, args=(port, results)) for _ in range(40)]
        for t in threads:
            t.start()
        time.sleep(3)
        hwm_during, rss_during = hwm_kib(server.pid)
        for t in threads:
            t.join(timeout=40)
        hwm, rss = hwm_kib(server.pid)
        closed = list(results)
        longest = max((r[0] for r in closed), default=float("nan"))
        kinds = sorted(set(r[1] for r in closed))
        print(
            f"slow bodies: VmRSS {rss_during / 1024:.1f} MiB while 40 stalled (3 s in); "
            f"VmHWM {hwm / 1024:.1f} MiB; {len(closed)}/40 closed by the server, the last after "
            f"{longest:.1f} s; answers: {kinds}"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
