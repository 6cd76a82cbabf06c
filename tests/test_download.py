"""facemask.data.download: fetch from mirror/local/http with verify and resume; extract safely."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facemask.data import download
from facemask.data.download import (
    DownloadError,
    UnsafeArchiveError,
    archive_name,
    extract,
    fetch,
    find_in_mirrors,
    mirror_folders,
)

PAYLOAD = bytes(range(256)) * 40  # 10 KiB that no truncation or offset error can fake
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
UNREACHABLE = "http://127.0.0.1:9/data/archive.zip"  # discard port: nothing listens


def leftovers(dest: Path) -> list[Path]:
    """Everything next to `dest` that a failed fetch might have left."""
    return sorted(dest.parent.glob(dest.name + "*"))


# --- names and mirrors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, file, expected",
    [
        ("https://host/a/b/faces.zip", None, "faces.zip"),
        ("https://host/faces.zip?download=1#x", None, "faces.zip"),
        ("file:///data/faces.tar.gz", None, "faces.tar.gz"),
        ("/data/faces.zip", None, "faces.zip"),
        ("https://host/download?id=123", "faces.zip", "faces.zip"),
    ],
)
def test_archive_name(url: str, file: str | None, expected: str) -> None:
    assert archive_name(url, file) == expected


def test_mirror_folders_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    sep = os.pathsep
    assert mirror_folders(f"{sep}/a{sep}{sep}/b{sep}") == [Path("/a"), Path("/b")]
    assert mirror_folders("") == []
    monkeypatch.setenv("FACEMASK_MIRROR", f"/m1{sep}/m2")
    assert mirror_folders() == [Path("/m1"), Path("/m2")]
    monkeypatch.delenv("FACEMASK_MIRROR")
    assert mirror_folders() == []


def test_find_in_mirrors_takes_first_folder_holding_a_file(tmp_path: Path) -> None:
    missing, holds_dir, first, second = (tmp_path / n for n in ("missing", "dir", "m1", "m2"))
    (holds_dir / "x.zip").mkdir(parents=True)  # a folder of that name does not count
    for m in (first, second):
        m.mkdir()
        (m / "x.zip").write_bytes(m.name.encode())
    assert find_in_mirrors("x.zip", [missing, holds_dir, first, second]) == first / "x.zip"
    assert find_in_mirrors("y.zip", [first, second]) is None


# --- fetch: local and mirror ------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "archive.zip"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-url"])
def test_fetch_local(tmp_path: Path, source: Path, as_uri: bool) -> None:
    dest = tmp_path / "cache" / "sub" / "archive.zip"  # parents are created
    got = fetch(source.as_uri() if as_uri else str(source), dest, sha256=PAYLOAD_SHA.upper())
    assert got == download.Fetched(dest, PAYLOAD_SHA, "local")
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest) == [dest]  # no .part


def test_fetch_prefers_mirror_over_unreachable_url(tmp_path: Path) -> None:
    empty, mirror = tmp_path / "empty", tmp_path / "mirror"
    empty.mkdir()
    mirror.mkdir()
    (mirror / "archive.zip").write_bytes(PAYLOAD)
    dest = tmp_path / "cache" / "archive.zip"
    got = fetch(UNREACHABLE, dest, sha256=PAYLOAD_SHA, mirrors=[empty, mirror], retries=0)
    assert (got.origin, got.sha256) == ("mirror", PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD


def test_fetch_missing_local_file_names_the_url(tmp_path: Path) -> None:
    url = str(tmp_path / "nowhere" / "archive.zip")
    with pytest.raises(DownloadError, match="no such file") as err:
        fetch(url, tmp_path / "cache" / "archive.zip")
    assert url in str(err.value)


@pytest.mark.parametrize("origin", ["local", "mirror"])
def test_fetch_sha_mismatch(tmp_path: Path, source: Path, origin: str) -> None:
    wrong = "0" * 64
    dest = tmp_path / "cache" / "archive.zip"
    dest.parent.mkdir()
    dest.write_bytes(b"the good copy from last time")
    mirrors = [source.parent] if origin == "mirror" else []
    url = UNREACHABLE if origin == "mirror" else str(source)
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        fetch(url, dest, sha256=wrong, mirrors=mirrors, retries=0)
    msg = str(err.value)
    assert wrong in msg and PAYLOAD_SHA in msg and f"({origin})" in msg
    # The unverified bytes are gone; what was at dest before is untouched.
    assert leftovers(dest) == [dest]
    assert dest.read_bytes() == b"the good copy from last time"


def test_fetch_sha_mismatch_leaves_no_dest(tmp_path: Path, source: Path) -> None:
    dest = tmp_path / "cache" / "archive.zip"
    with pytest.raises(DownloadError):
        fetch(str(source), dest, sha256="f" * 64)
    assert leftovers(dest) == []


# --- fetch: http ------------------------------------------------------------------------------


@dataclass
class Behaviour:
    """What the test server does; `requests` records each request's Range header."""

    data: bytes = PAYLOAD
    # ok | drop | drop-first | chunked-drop-first | ignore-range | 404 | 416 | 500
    mode: str = "ok"
    requests: list[str | None] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for chunked bodies
    behaviour: Behaviour  # set on the subclass each server gets

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        b = self.behaviour
        b.requests.append(self.headers.get("Range"))
        first = len(b.requests) == 1
        self.close_connection = True
        if b.mode in ("404", "416", "500"):
            self.send_error(int(b.mode))
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and b.mode != "ignore-range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(b.data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(b.data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = b.data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(b.data) - 1}/{len(b.data)}")
        drop = b.mode == "drop" or (first and b.mode.endswith("drop-first"))
        if b.mode == "chunked-drop-first":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
            if not drop:
                rest = body[len(half) :]
                self.wfile.write(f"{len(rest):x}\r\n".encode() + rest + b"\r\n0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # Dropping the connection half-way: promise the whole body, send half, hang up.
        self.wfile.write(body[: len(body) // 2] if drop else body)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Behaviour, list[float]]]:
    """A local http server (url prefix, its behaviour) plus the sleeps fetch asked for."""
    behaviour = Behaviour()
    handler = type("BoundHandler", (Handler,), {"behaviour": behaviour})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits for the next poll.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    sleeps: list[float] = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)  # retry at once
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", behaviour, sleeps
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_http_fetch(tmp_path: Path, server) -> None:
    base, behaviour, sleeps = server
    dest = tmp_path / "archive.zip"
    got = fetch(f"{base}/archive.zip", dest, sha256=PAYLOAD_SHA, retries=2, timeout=5)
    assert (got.origin, got.sha256) == ("http", PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert behaviour.requests == [None] and sleeps == []
    assert leftovers(dest) == [dest]


def test_http_resumes_after_dropped_connection(tmp_path: Path, server) -> None:
    base, behaviour, sleeps = server
    behaviour.mode = "drop-first"
    dest = tmp_path / "archive.zip"
    fetch(f"{base}/archive.zip", dest, sha256=PAYLOAD_SHA, retries=2, timeout=5)
    # The retry asked only for what the first try did not get.
    assert behaviour.requests == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert len(sleeps) == 1
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest) == [dest]


def test_http_retries_a_chunked_body_cut_short(tmp_path: Path, server) -> None:
    # http.client reports this as IncompleteRead, which is not an OSError.
    base, behaviour, _ = server
    behaviour.mode = "chunked-drop-first"
    dest = tmp_path / "archive.zip"
    fetch(f"{base}/archive.zip", dest, sha256=PAYLOAD_SHA, retries=2, timeout=5)
    assert len(behaviour.requests) == 2
    assert dest.read_bytes() == PAYLOAD


def test_http_restarts_when_server_ignores_range(tmp_path: Path, server) -> None:
    base, behaviour, _ = server
    behaviour.mode = "ignore-range"
    dest = tmp_path / "archive.zip"
    dest.with_name("archive.zip.part").write_bytes(b"stale bytes from another file")
    fetch(f"{base}/archive.zip", dest, sha256=PAYLOAD_SHA, retries=0, timeout=5)
    assert behaviour.requests == ["bytes=29-"]
    assert dest.read_bytes() == PAYLOAD  # overwritten, not appended to


def test_http_complete_part_file_gets_416(tmp_path: Path, server) -> None:
    base, behaviour, _ = server
    dest = tmp_path / "archive.zip"
    dest.with_name("archive.zip.part").write_bytes(PAYLOAD)
    got = fetch(f"{base}/archive.zip", dest, sha256=PAYLOAD_SHA, retries=0, timeout=5)
    assert behaviour.requests == [f"bytes={len(PAYLOAD)}-"]
    assert got.sha256 == PAYLOAD_SHA and leftovers(dest) == [dest]


@pytest.mark.parametrize("code", ["404", "416"])  # 416 without a .part is an error too
def test_http_4xx_fails_at_once(tmp_path: Path, server, code: str) -> None:
    base, behaviour, sleeps = server
    behaviour.mode = code
    url = f"{base}/missing.zip"
    with pytest.raises(DownloadError, match=f"HTTP {code}") as err:
        fetch(url, tmp_path / "missing.zip", retries=3, timeout=5)
    assert url in str(err.value)
    assert len(behaviour.requests) == 1 and sleeps == []  # a 4xx is not retried
    assert not (tmp_path / "missing.zip").exists()


def test_http_server_error_is_retried_then_reported(tmp_path: Path, server) -> None:
    base, behaviour, sleeps = server
    behaviour.mode = "500"
    dest = tmp_path / "archive.zip"
    with pytest.raises(DownloadError, match="failed after 3 tries"):
        fetch(f"{base}/archive.zip", dest, retries=2, timeout=5)
    assert len(behaviour.requests) == 3
    assert sleeps == [1, 2]  # exponential backoff
    assert not dest.exists()


def test_http_partial_download_never_looks_complete(tmp_path: Path, server) -> None:
    base, behaviour, _ = server
    behaviour.mode = "drop"  # every response is cut in half
    dest = tmp_path / "archive.zip"
    url = f"{base}/archive.zip"
    with pytest.raises(DownloadError, match="failed after 3 tries"):
        fetch(url, dest, sha256=PAYLOAD_SHA, retries=2, timeout=5)
    assert not dest.exists()
    part = dest.with_name("archive.zip.part")
    n = len(PAYLOAD)
    assert part.stat().st_size == n // 2 + (n - n // 2) // 2 + (n - n // 2 - n // 4) // 2
    # A later run resumes from what the failed one kept.
    behaviour.mode, kept = "ok", part.stat().st_size
    fetch(url, dest, sha256=PAYLOAD_SHA, retries=0, timeout=5)
    assert behaviour.requests[-1] == f"bytes={kept}-"
    assert dest.read_bytes() == PAYLOAD and leftovers(dest) == [dest]


# --- extract ----------------------------------------------------------------------------------

GOOD = {"top/a.txt": b"a", "top/sub/b.txt": b"bb", "other/c.txt": b"ccc"}


def make_zip(path: Path, entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> Path:
    """A zip of `entries`; names in `symlinks` get a symlink mode in external_attr."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


def make_tar(path: Path, entries: dict[str, bytes], extra: tuple[tarfile.TarInfo, ...] = ()):
    """A tar (compressed as its suffix says) of `entries` plus hand-made members."""
    with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as tf:
        for name, data in entries.items():
            tf.addfile(tar_member(name, size=len(data)), io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return path


def tree(folder: Path) -> dict[str, bytes | str]:
    """Relative path -> file bytes, "->target" for links, "/" for folders."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "->" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "/"
        else:
            out[rel] = p.read_bytes()
    return out


@pytest.fixture
def escape_path(tmp_path: Path) -> Iterator[Path]:
    """An absolute path outside tmp_path that a malicious entry aims at; must stay absent."""
    path = Path("/tmp") / f"facemask-escape-{uuid.uuid4().hex}"
    yield path
    assert not path.exists(), "an archive entry escaped to an absolute path"


def assert_refused(archive: Path, target: Path, *words: str, **kwargs) -> None:
    """extract raises UnsafeArchiveError naming the archive and `words`, writing nothing.

    The archive's folder (the test's tmp_path) holds `target`; it must not change at all.
    """
    root = archive.parent
    assert root in target.parents
    before = tree(root)
    with pytest.raises(UnsafeArchiveError) as err:
        extract(archive, target, **kwargs)
    msg = str(err.value)
    assert str(archive) in msg
    for word in words:
        assert word in msg
    assert tree(root) == before  # no target, no .partial, nothing beside or above them


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
def test_extract_whole_archive(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"a{suffix}"
    (make_zip if suffix == ".zip" else make_tar)(archive, GOOD)
    target = tmp_path / "out" / "data"
    assert extract(archive, target) == target
    assert {k: v for k, v in tree(target).items() if v != "/"} == GOOD
    assert not target.with_name("data.partial").exists()


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
@pytest.mark.parametrize("subdir", ["top", "/top/", "top/sub"])
def test_extract_subdir(tmp_path: Path, suffix: str, subdir: str) -> None:
    archive = tmp_path / f"a{suffix}"
    (make_zip if suffix == ".zip" else make_tar)(archive, GOOD)
    target = tmp_path / "data"
    extract(archive, target, subdir=subdir)
    prefix = subdir.strip("/") + "/"
    expected = {k.removeprefix(prefix): v for k, v in GOOD.items() if k.startswith(prefix)}
    assert {k: v for k, v in tree(target).items() if v != "/"} == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, "data"])


@pytest.mark.parametrize("suffix", [".zip", ".tar"])
def test_extract_missing_subdir(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"a{suffix}"
    (make_zip if suffix == ".zip" else make_tar)(archive, GOOD)
    assert_refused(archive, tmp_path / "data", "'nope'", subdir="nope")


@pytest.mark.parametrize("subdir", ["../other", "top/../../x", "C:/top"])
def test_extract_refuses_unsafe_subdir(tmp_path: Path, subdir: str) -> None:
    archive = make_zip(tmp_path / "a.zip", GOOD)
    assert_refused(archive, tmp_path / "data", "subdir", subdir=subdir)


def test_reextract_replaces_target(tmp_path: Path) -> None:
    target = tmp_path / "data"
    extract(make_zip(tmp_path / "old.zip", {"top/stale.txt": b"old"}), target, "top")
    extract(make_zip(tmp_path / "new.zip", {"top/fresh.txt": b"new"}), target, "top")
    assert tree(target) == {"fresh.txt": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "new.zip", "old.zip"]


def test_failed_extract_keeps_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "data"
    extract(make_zip(tmp_path / "good.zip", GOOD), target)
    good = tree(target)
    bad = make_zip(tmp_path / "bad.zip", {"ok.txt": b"x", "../evil.txt": b"x"})
    with pytest.raises(UnsafeArchiveError):
        extract(bad, target)
    assert tree(target) == good
    assert not target.with_name("data.partial").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"<html>not found</html>")
    assert_refused(archive, tmp_path / "data", "neither a zip nor a tar")


@pytest.mark.parametrize(
    "name, words",
    [
        ("/etc/x", ["'/etc/x'", "absolute"]),
        ("../x", ["'../x'", "'..'"]),
        ("a/../../x", ["'a/../../x'", "'..'"]),
        ("..\\x", ["'..\\\\x'", "'..'"]),  # Windows separators are separators too
        ("C:/x", ["'C:/x'", "absolute"]),
        ("C:x", ["'C:x'", "absolute"]),
    ],
)
def test_zip_refuses_escaping_names(tmp_path: Path, name: str, words: list[str]) -> None:
    # A good entry first: nothing at all may be written, not even the entries before.
    archive = make_zip(tmp_path / "evil.zip", {"good.txt": b"fine", name: b"pwned"})
    assert_refused(archive, tmp_path / "out" / "data", *words)


def test_zip_refuses_absolute_escape_to_real_path(tmp_path: Path, escape_path: Path) -> None:
    archive = make_zip(tmp_path / "evil.zip", {escape_path.as_posix(): b"pwned"})
    assert_refused(archive, tmp_path / "data", "absolute")


def test_zip_refuses_symlinks(tmp_path: Path) -> None:
    entries = {"good.txt": b"fine", "link": b"../../etc/passwd"}
    archive = make_zip(tmp_path / "evil.zip", entries, symlinks=("link",))
    assert_refused(archive, tmp_path / "data", "'link'", "symbolic link")


@pytest.mark.parametrize("suffix", [".zip", ".tar"])
def test_size_cap(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"big{suffix}"
    (make_zip if suffix == ".zip" else make_tar)(archive, {"a": b"x" * 600, "b": b"y" * 600})
    assert_refused(archive, tmp_path / "data", "1200 bytes", "cap of 1000", max_bytes=1000)
    extract(archive, tmp_path / "data", max_bytes=1200)  # exactly at the cap is fine


def test_size_cap_counts_only_subdir(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"keep/a": b"x" * 10, "skip/b": b"y" * 5000})
    extract(archive, tmp_path / "data", subdir="keep", max_bytes=100)
    assert tree(tmp_path / "data") == {"a": b"x" * 10}


def test_zip_entry_larger_than_its_header_says(tmp_path: Path) -> None:
    """A forged header understating a file's size: refused, and nothing is left behind."""
    data = b"z" * 5000
    archive = make_zip(tmp_path / "forged.zip", {"ok.txt": b"fine", "big.bin": data})
    raw = bytearray(archive.read_bytes())
    real, fake = len(data).to_bytes(4, "little"), (100).to_bytes(4, "little")
    # Stored (uncompressed) entries: the size appears as both compressed and uncompressed
    # size, in the local header and the central directory. Understate the uncompressed one.
    local = raw.rindex(b"PK\x03\x04", 0, raw.index(b"big.bin"))  # its local header
    assert raw[local + 22 : local + 26] == real
    raw[local + 22 : local + 26] = fake
    central = raw.rindex(b"PK\x01\x02")
    assert raw[central + 24 : central + 28] == real
    raw[central + 24 : central + 28] = fake
    archive.write_bytes(bytes(raw))
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_bytes(b"from a good run")
    # zipfile itself stops at the declared size and then fails its CRC check; either way
    # the failure comes after ok.txt was written, so the clean-up is what is tested here.
    with pytest.raises((UnsafeArchiveError, zipfile.BadZipFile), match=r"big\.bin"):
        extract(archive, target)
    assert tree(target) == {"keep.txt": b"from a good run"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "forged.zip"]


def test_extract_clears_stale_partial_folder(tmp_path: Path) -> None:
    stale = tmp_path / "data.partial"
    (stale / "top").mkdir(parents=True)
    (stale / "top" / "junk.txt").write_bytes(b"from a crashed run")
    extract(make_zip(tmp_path / "a.zip", GOOD), tmp_path / "data", subdir="top")
    assert "junk.txt" not in tree(tmp_path / "data")
    assert not stale.exists()


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
@pytest.mark.parametrize(
    "member, words",
    [
        pytest.param(tar_member("/abs.txt"), ["'/abs.txt'", "absolute"], id="absolute"),
        pytest.param(tar_member("../up.txt"), ["'../up.txt'", "'..'"], id="dotdot"),
        pytest.param(tar_member("a/../../up.txt"), ["'a/../../up.txt'", "'..'"], id="a-dotdot"),
        pytest.param(
            tar_member("a/l", tarfile.SYMTYPE, "../../etc/passwd"),
            ["'a/l'", "points outside"],
            id="symlink-dotdot",
        ),
        pytest.param(
            tar_member("l", tarfile.SYMTYPE, "/etc/passwd"),
            ["'l'", "points outside"],
            id="symlink-absolute",
        ),
        pytest.param(
            # Hard link names count from the archive root, not from the link's folder.
            tar_member("a/b/h", tarfile.LNKTYPE, "../x"),
            ["'a/b/h'", "hard link", "'..'"],
            id="hardlink-dotdot",
        ),
        pytest.param(
            tar_member("h", tarfile.LNKTYPE, "/etc/passwd"),
            ["'h'", "hard link", "absolute"],
            id="hardlink-absolute",
        ),
        pytest.param(tar_member("dev", tarfile.CHRTYPE), ["'dev'", "device"], id="char-dev"),
        pytest.param(tar_member("blk", tarfile.BLKTYPE), ["'blk'", "device"], id="block-dev"),
        pytest.param(tar_member("fifo", tarfile.FIFOTYPE), ["'fifo'", "device"], id="fifo"),
    ],
)
def test_tar_refuses(
    tmp_path: Path, suffix: str, member: tarfile.TarInfo, words: list[str]
) -> None:
    archive = make_tar(tmp_path / f"evil{suffix}", {"good.txt": b"fine"}, (member,))
    assert_refused(archive, tmp_path / "out" / "data", *words)


def test_tar_symlink_out_of_subdir_is_refused(tmp_path: Path) -> None:
    """Inside the archive, but outside subdir: once subdir becomes `target`, the link
    would point beside it."""
    link = tar_member("top/l", tarfile.SYMTYPE, "../other/c.txt")
    archive = make_tar(tmp_path / "a.tar", GOOD, (link,))
    assert_refused(archive, tmp_path / "data", "'top/l'", "points outside", subdir="top")


def test_tar_subdir_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    link = tar_member("data", tarfile.SYMTYPE, "other")
    archive = make_tar(tmp_path / "a.tar", GOOD, (link,))
    assert_refused(archive, tmp_path / "out", "has no folder 'data'", subdir="data")


def test_tar_keeps_links_inside_the_archive(tmp_path: Path) -> None:
    links = (
        tar_member("top/sub/l", tarfile.SYMTYPE, "../a.txt"),
        tar_member("top/h", tarfile.LNKTYPE, "top/a.txt"),
    )
    archive = make_tar(tmp_path / "a.tar.gz", GOOD, links)
    target = tmp_path / "data"
    extract(archive, target, subdir="top")
    assert (target / "sub" / "l").is_symlink()
    assert (target / "sub" / "l").read_bytes() == b"a"
    assert (target / "h").read_bytes() == b"a"


def test_tar_hard_link_to_file_outside_subdir_gets_its_content(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "a.tar", GOOD, (tar_member("top/h", tarfile.LNKTYPE, "other/c.txt"),)
    )
    extract(archive, tmp_path / "data", subdir="top")
    assert (tmp_path / "data" / "h").read_bytes() == b"ccc"
