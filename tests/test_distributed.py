"""Several processes train what one process trains: two CPU processes (gloo) against one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from facemask.data.cache import ArrayStore, Normalize
from facemask.models.factory import create_model, load_model
from facemask.params import stage_params
from facemask.training import distributed
from facemask.training.distributed import Context, init_distributed
from facemask.training.features import cached_features
from facemask.training.train import fine_tune
from tests.conftest import ROOT, params_with, run_data_stages

NORM = Normalize((0.5,) * 3, (0.25,) * 3)
WEIGHT = torch.tensor([1.0, 3.0])  # class weights: the loss's denominator spans processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=g)
    return images, (torch.arange(24) % 3 == 0).long()  # unbalanced, so weights matter


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # No dropout: its masks fall on other samples in two processes than in one.
    return create_model("facemask_cnn", 2, pretrained=False, drop_rate=0.0)[0]


def tiny_finetune(augment=None, checkpoint: Path | None = None, micro: int | None = None):
    model = tiny_model()
    images, labels = tiny_data()
    history = fine_tune(
        model,
        NORM,
        images[:16],
        labels[:16],
        images[16:],
        labels[16:],
        augment,
        epochs=3,
        lr=1e-3,
        batch_size=4,
        label_smoothing=0.1,
        patience=0,
        checkpoint=checkpoint,
        class_weight=WEIGHT,
        micro_batch_size=micro,
    )
    return model, history


class Interrupt(Exception):
    pass


def worker(rank: int, world: int, port: int, out: Path) -> None:
    """One of `world` processes, joined as torchrun would join it."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    job = init_distributed("auto")
    assert (job.rank, job.world_size, job.device.type) == (rank, world, "cpu")
    # Each process runs its 2 samples of a step as two micro-batches of 1.
    model, history = tiny_finetune(checkpoint=out / f"ckpt{rank}.pt", micro=1)
    result = {"state": model.state_dict(), "history": history}

    # Interrupted part-way through epoch 2 in both processes, then resumed: rank 1 has no
    # checkpoint file of its own and must get rank 0's.
    calls = {"n": 0}

    def flaky(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 8 + 3:
            raise Interrupt
        return x

    resume = out / f"resume{rank}.pt"
    try:
        tiny_finetune(flaky, resume, micro=1)
        result["interrupted"] = False
    except Interrupt:
        result["interrupted"] = True
    calls["n"] = -1000  # no more interruptions
    model, history = tiny_finetune(flaky, resume, micro=1)
    result.update(resumed_state=model.state_dict(), resumed_history=history, seen=calls["n"])

    # Features: 11 images over 2 processes (shards of 6 and 5), into one store, then again
    # with rank 1 looking at an empty store of its own (as on a second machine).
    model, images = tiny_model(), tiny_data()[0][:11]
    keys = [f"k{i}" for i in range(11)]
    result["features"] = cached_features(model, images, keys, NORM, ArrayStore(out / "store"), 4)
    result["files"] = len(list((out / "store").rglob("*.npy")))
    other = ArrayStore(out / ("store" if rank == 0 else "store_rank1"))
    result["features_again"] = cached_features(model, images, keys, NORM, other, 4)
    torch.save(result, out / f"rank{rank}.pt")
    distributed.close_distributed()


def run_processes(world: int, out: Path, timeout: float = 120) -> None:
    """Start `world` worker processes; fail (not hang) when one dies or the group deadlocks."""
    ctx = mp.start_processes(
        worker, args=(world, free_port(), out), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"{world} processes still running after {timeout} s (deadlock?)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()


def test_one_process_without_torchrun(monkeypatch):
    for var in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    assert init_distributed("auto") == Context() and Context().is_main
    assert distributed.shard_range(5) == range(5)
    rows = torch.arange(6.0).view(3, 2)
    assert distributed.gather_rows(rows, 3) is rows
    with pytest.raises(ValueError, match="auto"):
        init_distributed("on")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, "0")
    with pytest.raises(RuntimeError, match="torchrun started 2 processes"):
        init_distributed("off")  # two processes would each write the same outputs


def test_step_batches_keep_the_global_batch():
    from facemask.training.train import _step_batches

    # 10 samples, steps of 4, micro-batches of 3: the short last step is dropped...
    assert _step_batches(list(range(10)), 4, 3, True) == [[[0, 1, 2], [3]], [[4, 5, 6], [7]]]
    # ...unless the data is less than one batch.
    assert _step_batches(list(range(3)), 4, 3, False) == [[[0, 1, 2]]]


def test_fine_tune_rejects_a_batch_the_processes_cannot_share(monkeypatch):
    monkeypatch.setattr("facemask.training.train.world_size", lambda: 3)
    images, labels = tiny_data()
    with pytest.raises(ValueError, match="multiple of 3"):
        fine_tune(tiny_model(), NORM, images, labels, images, labels, None, 1, batch_size=4)


@pytest.mark.slow
def test_two_processes_train_and_extract_what_one_does(tmp_path):
    run_processes(2, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    model, history = tiny_finetune()  # one process, one batch of 4 per step

    for r in ranks:  # both processes end with the one-process weights and history
        for key, value in model.state_dict().items():
            torch.testing.assert_close(r["state"][key], value, atol=1e-5, rtol=1e-4)
        for got, want in zip(r["history"], history, strict=True):
            for k in ("train_loss", "train_acc", "valid_loss", "valid_acc"):
                assert got[k] == pytest.approx(want[k], abs=1e-5), (k, got["epoch"])
    assert (tmp_path / "ckpt0.pt").is_file()
    assert not (tmp_path / "ckpt1.pt").exists()  # rank 0 alone writes

    for r in ranks:  # the resumed run: epochs 2 and 3 only, ending where the unbroken run did
        assert r["interrupted"] and r["seen"] == -1000 + 2 * 8
        assert [h["epoch"] for h in r["resumed_history"]] == [1, 2, 3]
        for key, value in r["state"].items():
            torch.testing.assert_close(r["resumed_state"][key], value)

    model, images = tiny_model().eval(), tiny_data()[0][:11]
    with torch.no_grad():
        want = model.forward_head(model.forward_features(NORM(images)), pre_logits=True)
    for r in ranks:  # each process holds all 11 rows, as one process computes them
        torch.testing.assert_close(r["features"], want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r["features_again"], want, atol=1e-5, rtol=1e-4)
    assert ranks[0]["files"] == 11  # written once, by the machine's first process
    assert not (tmp_path / "store_rank1").exists()  # rank 1 is no machine's first process


@pytest.mark.slow
def test_train_stage_under_torchrun(params, tmp_path, monkeypatch):
    """`torchrun --nproc_per_node=2 -m stages.train`: both processes train, one writes."""
    monkeypatch.chdir(tmp_path)
    run_data_stages(params)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for var in distributed.TORCHRUN_VARS:
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "stages.train", "data/splits", "--params", "params.yaml"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"best_valid_loss"') == 1  # one summary: rank 0's
    summary = json.loads(Path("metrics/train/metrics.json").read_text())
    assert summary["epochs_finetune"] == params["train"]["finetune"]["epochs"] == 1
    # DVCLive logged from rank 0 only: one row per epoch, not one per process.
    curve = pd.read_csv("metrics/train/plots/metrics/valid_loss.tsv", sep="\t")
    epochs = summary["epochs_head"] + summary["epochs_finetune"]
    assert curve["step"].tolist() == list(range(epochs)) == list(range(summary["step"] + 1))
    assert load_model("models/model.safetensors")[1].classes == params["classes"]


def test_the_launcher_command_by_hand(monkeypatch):
    for var in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    assert distributed.torchrun_command(1, 1, "", "stages.train", ["data/splits"]) is None
    one = distributed.torchrun_command(2, 1, "", "stages.train", ["data/splits", "--params", "p"])
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
                       "-m", "stages.train", "data/splits", "--params", "p"]  # fmt: skip
    assert one[0] == sys.executable  # the venv's python, whatever PATH says
    two = distributed.torchrun_command(4, 2, "10.0.0.1:29400", "stages.train", [], node_rank=1)
    assert "--nnodes=2" in two and "--node-rank=1" in two and "--rdzv-backend=static" in two
    assert "--master-addr=10.0.0.1" in two and "--master-port=29400" in two
    assert "--standalone" not in two
    with pytest.raises(ValueError, match="node rank 2 is not one of the 2 machines"):
        distributed.torchrun_command(4, 2, "10.0.0.1:29400", "stages.train", [], node_rank=2)
    with pytest.raises(ValueError, match=r"host:port, not '10\.0\.0\.1'"):
        distributed.torchrun_command(4, 2, "10.0.0.1", "stages.train", [])
    for var in distributed.TORCHRUN_VARS:  # already one of torchrun's processes: no nesting
        monkeypatch.setenv(var, "0")
    assert distributed.torchrun_command(2, 1, "", "stages.train", []) is None


def test_several_machines_need_a_rendezvous():
    params = params_with(launch={"processes": 2, "nodes": 2, "rendezvous": ""})
    with pytest.raises(ValueError, match=r"launch\.nodes > 1 needs launch\.rendezvous"):
        stage_params(params, ("launch",))
