"""Fetch archives (mirror, local path or http) and unpack them safely."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from facemask.params import DownloadParams, Source

CHUNK = 1 << 20  # bytes per read: large enough that hashing, not syscalls, dominates


class DownloadError(RuntimeError):
    """A source could not be fetched or verified."""


class UnsafeArchiveError(RuntimeError):
    """An archive holds an entry that would escape its target folder or is too big."""


def archive_name(url: str, file: str | None = None) -> str:
    """File name an archive is stored and looked up under."""
    return file or PurePosixPath(urllib.parse.urlparse(url).path).name


def mirror_folders(env: str | None = None) -> list[Path]:
    """Folders named by FACEMASK_MIRROR (os.pathsep-separated), in order."""
    value = os.environ.get("FACEMASK_MIRROR", "") if env is None else env
    return [Path(p) for p in value.split(os.pathsep) if p]


def find_in_mirrors(name: str, mirrors: Iterable[Path]) -> Path | None:
    """First mirror folder holding a file of that name."""
    for folder in mirrors:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_with_progress(src: Path, part: Path, desc: str) -> None:
    with (
        open(src, "rb") as fin,
        open(part, "wb") as fout,
        tqdm(total=src.stat().st_size, unit="B", unit_scale=True, desc=desc) as bar,
    ):
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))


def _http_to_part(url: str, part: Path, desc: str, retries: int, timeout: float) -> None:
    """Download into `part`, resuming from its current size after a dropped connection."""
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "facemask"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                resumed = response.status == 206
                if not resumed:
                    have = 0  # server ignored Range: start over
                length = response.headers.get("Content-Length")
                total = have + int(length) if length else None
                with (
                    open(part, "ab" if resumed else "wb") as fout,
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc) as bar,
                ):
                    while chunk := response.read(CHUNK):
                        fout.write(chunk)
                        bar.update(len(chunk))
                if total is not None and part.stat().st_size != total:
                    raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes")
                return
        except (
            urllib.error.URLError,
            http.client.HTTPException,  # IncompleteRead: a chunked body cut short
            TimeoutError,
            ConnectionError,
            DownloadError,
        ) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code == 416 and have:
                return  # range not satisfiable: the part file is already complete
            if isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
            if attempt == retries:
                raise DownloadError(f"{url}: failed after {retries + 1} tries: {err}") from err
            wait = 2**attempt
            print(f"{url}: {err}; retrying in {wait} s")
            time.sleep(wait)


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    origin: str  # "mirror", "local" or "http": where the bytes came from


def fetch(
    url: str,
    dest: Path,
    sha256: str | None = None,
    mirrors: Sequence[Path] = (),
    retries: int = 4,
    timeout: float = 60.0,
) -> Fetched:
    """Fetch `url` to `dest`, preferring a mirror copy of the same file name.

    The bytes go to `dest.part` and are renamed only once complete and verified, so
    an interrupted or corrupt download never looks finished.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    mirrored = find_in_mirrors(dest.name, mirrors)
    parsed = urllib.parse.urlparse(url)
    if mirrored is not None:
        origin = "mirror"
        _copy_with_progress(mirrored, part, dest.name)
    elif parsed.scheme in ("http", "https"):
        origin = "http"
        _http_to_part(url, part, dest.name, retries, timeout)
    else:
        origin = "local"
        local = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else url)
        if not local.is_file():
            raise DownloadError(f"{url}: no such file (and {dest.name} is in no mirror folder)")
        _copy_with_progress(local, part, dest.name)
    actual = sha256_file(part)
    if sha256 and actual != sha256.lower():
        part.unlink()
        raise DownloadError(
            f"{dest.name} from {url} ({origin}): sha256 mismatch: expected {sha256}, got {actual}"
        )
    part.replace(dest)
    return Fetched(dest, actual, origin)


def _safe_relpath(name: str, archive: Path, what: str = "entry") -> PurePosixPath:
    """Refuse absolute names, drive letters and `..` components."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise UnsafeArchiveError(f"{archive}: {what} {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"{archive}: {what} {name!r} climbs out with '..'")
    return path


def _link_escapes(member: PurePosixPath, target: str) -> bool:
    """Would a link at `member` pointing to `target` resolve outside the archive root?"""
    if target.startswith("/") or (target[:2].endswith(":")):
        return True
    depth = len(member.parent.parts)
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def _within(path: PurePosixPath, subdir: PurePosixPath | None) -> bool:
    return subdir is None or path == subdir or subdir in path.parents


def extract(
    archive: Path, target: Path, subdir: str | None = None, max_bytes: int = 20 * 2**30
) -> Path:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into `target`, safely.

    Every entry is checked before anything is written: absolute paths, `..`, links
    pointing outside and a total unpacked size above `max_bytes` are refused with an
    error naming the archive and entry. Only entries under `subdir` are written. The
    files land in a temporary folder renamed to `target` at the end, so a half-done
    extraction never looks complete. `target` then holds what was under `subdir`.
    """
    # subdir comes from params, but "../x" would still pick a folder beside the temporary one.
    sub = _safe_relpath(subdir.strip("/"), archive, "subdir") if subdir else None
    tmp = target.with_name(target.name + ".partial")
    _remove(tmp)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, sub, max_bytes)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, sub, max_bytes)
        else:
            raise UnsafeArchiveError(f"{archive}: neither a zip nor a tar archive")
        root = tmp.joinpath(*sub.parts) if sub else tmp
        if root.is_symlink() or not root.is_dir():
            # A linked subdir would make `target` itself a link, pointing who knows where.
            raise UnsafeArchiveError(f"{archive}: has no folder {subdir!r}")
        _swap_in(root, target)
    finally:
        # Whatever went wrong (a refused entry, a corrupt stream, Ctrl-C), no half-filled
        # folder is left behind to be mistaken for data.
        _remove(tmp)
    return target


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _swap_in(new: Path, target: Path) -> None:
    """Replace `target` with `new`, keeping the old `target` until the new one is in place."""
    old = target.with_name(target.name + ".old")
    _remove(old)
    had_old = target.exists() or target.is_symlink()
    if had_old:
        target.replace(old)
    try:
        new.replace(target)
    except BaseException:
        if had_old:
            old.replace(target)
        raise
    _remove(old)


def _check_total(archive: Path, total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to {total} bytes, over the cap of {max_bytes} "
            "(download.max_unpacked_bytes)"
        )


def _extract_zip(archive: Path, tmp: Path, sub: PurePosixPath | None, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = []
        for info in zf.infolist():
            path = _safe_relpath(info.filename, archive)
            if stat.S_ISLNK(info.external_attr >> 16):
                # zipfile would write the link target as a plain file; refuse all links
                # rather than guess what the archive meant.
                raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is a symbolic link")
            if _within(path, sub) and not info.is_dir():
                members.append((info, path))
        _check_total(archive, sum(i.file_size for i, _ in members), max_bytes)
        for info, path in tqdm(members, desc=f"unzip {archive.name}", unit="file"):
            out = tmp.joinpath(*path.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fin, open(out, "wb") as fout:
                # Count bytes as they come: a forged header can understate file_size.
                written = 0
                while chunk := fin.read(CHUNK):
                    written += len(chunk)
                    if written > info.file_size:
                        raise UnsafeArchiveError(
                            f"{archive}: entry {info.filename!r} is larger than its header says"
                        )
                    fout.write(chunk)


def _extract_tar(archive: Path, tmp: Path, sub: PurePosixPath | None, max_bytes: int) -> None:
    with tarfile.open(archive) as tf:
        members = []
        for member in tf.getmembers():
            path = _safe_relpath(member.name, archive)
            if member.issym():
                # Judged from the folder that becomes `target`: a link out of subdir would
                # point beside `target` once subdir is moved into place.
                base = path.relative_to(sub) if sub is not None and _within(path, sub) else path
                if _link_escapes(base, member.linkname):
                    raise UnsafeArchiveError(
                        f"{archive}: link {member.name!r} points outside ({member.linkname!r})"
                    )
            if member.islnk():
                # A hard link's target is named from the archive root, not from its folder.
                _safe_relpath(member.linkname, archive, f"hard link {member.name!r} to")
            if member.isdev():
                raise UnsafeArchiveError(f"{archive}: entry {member.name!r} is a device file")
            if _within(path, sub):
                members.append(member)
        _check_total(archive, sum(m.size for m in members if m.isfile()), max_bytes)
        tmp.mkdir(parents=True, exist_ok=True)
        # The 'data' filter re-checks every entry (and strips modes we don't want).
        tf.extractall(tmp, members=members, filter="data")


def _fetch_cached(src: Source, dest: Path, dl: DownloadParams) -> Fetched:
    """fetch(), unless an earlier run already downloaded this URL completely.

    Only web downloads are reused: local files and mirrors are re-read every time
    (cheap), so an edited local archive is never shadowed by a stale copy.
    """
    sidecar = dest.with_name(dest.name + ".json")
    if dest.is_file() and sidecar.is_file():
        seen = json.loads(sidecar.read_text())
        pinned = src.sha256
        if seen["origin"] == "http" and (not pinned or seen["sha256"] == pinned.lower()):
            return Fetched(dest, seen["sha256"], seen["origin"])
    fetched = fetch(
        src.url,
        dest,
        sha256=src.sha256,
        mirrors=mirror_folders(),
        retries=dl.retries,
        timeout=dl.timeout,
    )
    sidecar.write_text(json.dumps({"sha256": fetched.sha256, "origin": fetched.origin}))
    return fetched


def fetch_source(src: Source, out: Path, downloads: Path, dl: DownloadParams) -> dict:
    """Fetch one source spec (params.yaml `data.sources` item) and unpack it into `out`.

    Archives are kept under `downloads` (the user cache), keyed by URL, not next to the
    extracted copy: DVC would otherwise store every archive twice on the remote. Returns
    the manifest entry (url, file, sha256, origin).
    """
    name = archive_name(src.url, src.file)
    key = hashlib.sha256(src.url.encode()).hexdigest()[:16]
    fetched = _fetch_cached(src, downloads / key / name, dl)
    # A mirror's copy may be laid out differently from the URL's archive.
    subdir = src.subdir
    if fetched.origin == "mirror" and src.mirror_subdir is not None:
        subdir = src.mirror_subdir
    extract(fetched.path, out, subdir, dl.max_unpacked_bytes)
    print(f"{src.name}: {name} ({fetched.origin}) sha256 {fetched.sha256}")
    return {"url": src.url, "file": name, "sha256": fetched.sha256, "origin": fetched.origin}
