"""The service under hostile uploads, with its default limits (issue 21): peak memory and a normal client's wait.

Starts `iaa serve` in a child process, then
1. `--clients` clients at once, each posting `--files` PNGs of `--side` x `--side` pixels (tiny files, huge
   images: each decodes to side² pixels), and reports the server's peak RSS (VmHWM) against the 2 GB goal;
2. `--slow` clients trickling 1 KB/s, and meanwhile one normal upload, whose answer time is reported
   (goal: under 2 s) with the status the slow clients got.

    python -m benchmarks.service_memory --clients 8 --files 32 --side 7700

The model is a random tiny student unless --model is given (memory is dominated by decoded pixels).
"""
from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from benchmarks.cull_torture import SOURCE, tiny_model

BOUNDARY = "bench-boundary"


def png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (120, 80, 40)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def body(files: list[bytes]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="p{i}.png"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for i, data in enumerate(files)]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post(port: int, payload: bytes, timeout: float = 3600) -> tuple[int, float]:
    started = time.perf_counter()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=payload, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - started


def trickle(port: int, payload: bytes, results: list) -> None:
    """Send `payload` at 1 KB/s; records the status the server answered (or 'closed')."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                  f"Content-Length: {len(payload)}\r\n\r\n".encode())
        s.settimeout(1.0)
        for i in range(0, len(payload), 1024):
            try:
                s.sendall(payload[i:i + 1024])
                reply = s.recv(200)
                if reply:
                    results.append(reply.split(b"\r\n")[0].decode())
                    return
            except socket.timeout:
                continue
            except OSError:
                results.append("closed")
                return
        results.append("sent all")


def peak_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--side", type=int, default=7700)
    parser.add_argument("--slow", type=int, default=16)
    parser.add_argument("--model")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        model = args.model or str(tiny_model(Path(tmp) / "model"))
        code = ("import sys; from iaa_distill.cli import main; sys.exit(main(['serve', '--model', sys.argv[1], "
                "'--port', sys.argv[2], '--device', 'cpu']))")
        server = subprocess.Popen([sys.executable, "-c", code, model, str(port)], env={"PYTHONPATH": SOURCE, "PATH": "/usr/bin:/bin"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 300
            while time.time() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.5)
            idle = peak_rss(server.pid)
            heavy = body([png(args.side)] * args.files)
            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                answers = list(pool.map(lambda _: post(port, heavy), range(args.clients)))
            seconds = time.perf_counter() - started
            print(f"{args.clients} clients x {args.files} PNGs of {args.side}x{args.side} ({len(heavy) / 1e6:.1f} MB per request): "
                  f"statuses {sorted(set(a[0] for a in answers))}, {seconds:.0f} s; server RSS idle {idle:.2f} GB, "
                  f"peak {peak_rss(server.pid):.2f} GB (goal < 2 GB)")
            slow_results: list = []
            normal = body([png(256)])
            threads = [threading.Thread(target=trickle, args=(port, normal + b"\0" * 200_000, slow_results)) for _ in range(args.slow)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            status, wait = post(port, normal, timeout=30)
            for t in threads:
                t.join(120)
            print(f"{args.slow} clients trickling 1 KB/s: a normal upload answered {status} in {wait:.2f} s (goal < 2 s); "
                  f"the slow clients got {sorted(set(slow_results))}")
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
