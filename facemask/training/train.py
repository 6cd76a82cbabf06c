"""Training loops: a linear head on cached features, then optional whole-net fine-tuning."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from facemask.data.cache import Normalize, Split
from facemask.models.factory import timm_net
from facemask.models.predict import predict_logits
from facemask.params import HeadParams, TrainParams
from facemask.runtime import refresh_threads
from facemask.training.augment import TensorImages, create_augment, named_degraded_view
from facemask.training.distributed import (
    broadcast_object,
    gather_rows,
    is_main_process,
    rank,
    shard_range,
    sum_across,
    world_size,
)
from facemask.training.features import feature_sources, frozen_features, use_bf16


@dataclass
class EarlyStopping:
    """Stop when valid loss has not improved for `patience` epochs; remember the best."""

    patience: int
    best_loss: float = math.inf
    best_epoch: int = -1
    best_state: dict | None = None
    bad_epochs: int = 0

    def step(self, epoch: int, loss: float, module: nn.Module) -> bool:
        """Record an epoch; return True when training should stop."""
        if loss < self.best_loss - 1e-6:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self.best_state = copy.deepcopy(module.state_dict())
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience


def _schedule(optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup: float):
    """Per-step LR schedule: 'cosine' (linear warm-up then cosine) or 'onecycle'."""
    total_steps = max(total_steps, 1)
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            [g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=max(warmup, 1e-3),
            anneal_strategy="cos",
        )
    if kind != "cosine":
        raise ValueError(f"unknown schedule {kind!r}: use 'cosine' or 'onecycle'")
    warm = int(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total_steps - warm, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weights(labels: torch.Tensor, n_classes: int, mode: str | None) -> torch.Tensor | None:
    """'balanced': n / (k * count) per class, as scikit-learn defines it; None: unweighted."""
    if mode in (None, "none"):
        return None
    if mode != "balanced":
        raise ValueError(f"train.class_weights must be 'balanced' or 'none', not {mode!r}")
    counts = torch.bincount(labels, minlength=n_classes).float()
    return len(labels) / (n_classes * counts.clamp(min=1))


@torch.no_grad()
def _evaluate_logits(
    logits: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None = None
) -> tuple[float, float]:
    """Valid loss, weighted as the training loss is, and accuracy.

    The weights matter where a class is rare: unweighted, the loss of a three-class valid
    split is nearly all with_mask and without_mask, and early stopping kept the weights of
    the first fine-tune epoch, before the rare class was learnt.
    """
    loss = F.cross_entropy(logits, y, weight=class_weight)
    return loss.item(), (logits.argmax(1) == y).float().mean().item()


def feature_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout of cached features: F.dropout's distribution, cheaper on the CPU.

    torch's CPU dropout draws one Mersenne-Twister number per element, ~2 ms for a 64 x 2560
    batch and more than the rest of a head step together (the audit fits five heads). Here
    each 64-bit draw gives four 16-bit lanes: an element is kept with probability 1 - p to
    within 2**-16, and the kept ones are scaled by 1 / (1 - p) as F.dropout does.
    """
    if not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), not {p}")
    if p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n, int64 = x.numel(), torch.iinfo(torch.int64)
    bits = torch.randint(int64.min, int64.max, ((n + 3) // 4,), dtype=torch.int64)
    lanes = bits.view(torch.int16)[:n].view(x.shape)
    return torch.where(lanes >= round(p * 65536) - 32768, x * (1 / (1 - p)), 0.0)


def fit_head(
    head: nn.Linear,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    valid_x: torch.Tensor,
    valid_y: torch.Tensor,
    epochs: int = 50,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    dropout: float = 0.2,
    label_smoothing: float = 0.0,
    patience: int = 8,
    class_weight: torch.Tensor | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train a linear classifier on fixed features; keep the weights with best valid loss.
    `on_epoch` gets each epoch's row as it ends (the stage's DVCLive run).

    Runs in seconds: the backbone never runs here, only a (batch x features) matmul.
    The head starts from zeros: the problem is convex, and timm's init for a 2-way
    head (uniform +-1/sqrt(2) in EfficientNet-style nets) puts the first logits in
    the tens, which takes many epochs to unlearn.
    """
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train_y) / batch_size)
    sched = _schedule(opt, "cosine", steps, warmup=0.05)
    stopper, history = EarlyStopping(patience), []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        head.train()
        order = torch.randperm(len(train_y))
        total, correct = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            logits = head(feature_dropout(train_x[idx], dropout))
            loss = F.cross_entropy(
                logits, train_y[idx], weight=class_weight, label_smoothing=label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == train_y[idx]).sum().item()
        head.eval()
        with torch.no_grad():
            valid_loss, valid_acc = _evaluate_logits(head(valid_x), valid_y, class_weight)
        history.append(
            {
                "phase": "head",
                "epoch": epoch,
                "train_loss": total / len(train_y),
                "train_acc": correct / len(train_y),
                "valid_loss": valid_loss,
                "valid_acc": valid_acc,
                "seconds": time.perf_counter() - t0,
            }
        )
        if on_epoch is not None:
            on_epoch(history[-1])
        if stopper.step(epoch, valid_loss, head):
            break
    if stopper.best_state is None:  # no epoch ran, or the valid loss was never a number
        raise ValueError(f"fit_head: no epoch improved the valid loss ({epochs} epochs)")
    head.load_state_dict(stopper.best_state)
    return history


def _set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def early_layers(model: nn.Module, fraction: float) -> list[nn.Parameter]:
    """The parameters of the first `fraction` of each backbone's layer groups, stem first.

    Groups are timm's own (`group_matcher`: the stem, then each block), per branch of a
    joined model. A backbone without a matcher gives none: it fine-tunes whole.
    """
    from timm.models import group_parameters

    branches = getattr(model, "backbones", [model])
    frozen = []
    for branch in branches:
        if fraction <= 0 or not hasattr(branch, "group_matcher"):
            continue
        named = dict(branch.named_parameters())
        groups = list(group_parameters(branch, branch.group_matcher(coarse=False)).values())
        for names in groups[: int(fraction * len(groups))]:
            frozen += [named[n] for n in names]
    return frozen


def _optimizer(
    model: nn.Module, lr: float, backbone_lr_scale: float, weight_decay: float, freeze: float
) -> torch.optim.Optimizer:
    """AdamW over the net less its `freeze` share of early layers, the head at `lr` and the
    body at `lr * backbone_lr_scale`.

    Frozen early layers cost no backward pass (autograd records nothing before the first
    layer that learns): on 2 CPU cores most of a fine-tune step is the early layers' wide
    activations, and their generic ImageNet filters need the least change.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    for p in early_layers(model, freeze):
        p.requires_grad_(False)
    head_params = list(timm_net(model).get_classifier().parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    return torch.optim.AdamW(
        [{"params": body_params, "lr": lr * backbone_lr_scale}, {"params": head_params, "lr": lr}],
        weight_decay=weight_decay,
    )


@dataclass
class Checkpoint:
    """The fine-tune's full state after each epoch, so an interrupted run resumes.

    Rank 0 reads and writes the file; the state it read is broadcast to the other
    processes (machines other than rank 0's may not see the file).
    """

    path: Path | None

    def restore(self, model: nn.Module, opt, sched, stopper: EarlyStopping) -> tuple[list, int]:
        """Load a saved state into the objects; returns (history, first epoch to run)."""
        state = None
        if self.path is not None and is_main_process() and self.path.is_file():
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        state = broadcast_object(state)
        if state is None:
            return [], 1
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        stopper.best_loss, stopper.best_epoch = state["best_loss"], state["best_epoch"]
        stopper.best_state, stopper.bad_epochs = state["best_state"], state["bad_epochs"]
        if is_main_process():
            print(f"resuming fine-tune from {self.path} after epoch {state['epoch']}")
        return state["history"], state["epoch"] + 1

    def save(
        self, model: nn.Module, opt, sched, stopper: EarlyStopping, history: list, epoch: int
    ) -> None:
        if self.path is None or not is_main_process():
            return
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "history": history,
            "epoch": epoch,
            "best_loss": stopper.best_loss,
            "best_epoch": stopper.best_epoch,
            "best_state": stopper.best_state,
            "bad_epochs": stopper.bad_epochs,
        }
        _save_checkpoint(self.path, state)


@dataclass
class _Epochs:
    """One fine-tune's moving parts: the nets, the data, the optimiser and its schedule."""

    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    model: nn.Module
    data: TensorImages
    labels: torch.Tensor
    norm: Normalize
    device: torch.device
    use_amp: bool
    class_weight: torch.Tensor | None  # on the CPU (denominators)
    weight: torch.Tensor | None  # the same on the device (the loss)
    label_smoothing: float
    world: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    sampler: DistributedSampler
    steps: list[list[list[int]]]  # per optimiser step, its micro-batches (sampler positions)
    micro: int

    @classmethod
    def create(
        cls,
        model: nn.Module,
        norm: Normalize,
        images: torch.Tensor,
        labels: torch.Tensor,
        augment: Callable | None,
        device: torch.device | str,
        *,
        epochs: int,
        lr: float,
        backbone_lr_scale: float,
        weight_decay: float,
        batch_size: int,
        micro_batch_size: int | None,
        schedule: str,
        warmup: float,
        label_smoothing: float,
        class_weight: torch.Tensor | None,
        seed: int,
        amp: bool,
        freeze: float,
    ) -> _Epochs:
        """Everything set up for the first epoch, on `device` (see fine_tune)."""
        world, device = world_size(), torch.device(device)
        if batch_size % world:
            raise ValueError(
                f"fine-tune batch_size {batch_size} is not a multiple of {world} processes"
            )
        model.to(device)
        opt = _optimizer(model, lr, backbone_lr_scale, weight_decay, freeze)
        data = TensorImages(images, labels, augment)
        # Rank r takes every N-th sample of one shared permutation, so step k's global batch
        # is the same set of samples for any N (with N=1 it is the whole permutation).
        sampler: DistributedSampler[int] = DistributedSampler(
            data, num_replicas=world, rank=rank(), shuffle=True, seed=seed
        )
        share = batch_size // world
        micro = min(micro_batch_size or share, share)
        steps = _step_batches(
            list(range(sampler.num_samples)), share, micro, len(labels) > batch_size
        )
        net = model
        if world > 1:
            net = DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None
            )
        return cls(
            net, model, data, labels, copy.deepcopy(norm).to(device), device,
            use_amp=amp and device.type == "cuda" and torch.cuda.is_bf16_supported(),
            class_weight=class_weight,
            weight=class_weight.to(device) if class_weight is not None else None,
            label_smoothing=label_smoothing, world=world, opt=opt,
            sched=_schedule(opt, schedule, epochs * len(steps), warmup),
            sampler=sampler, steps=steps, micro=micro,
        )  # fmt: skip

    def epoch(self, epoch: int, epochs: int, seed: int, freeze_bn: bool) -> torch.Tensor:
        """Train one epoch; returns (loss x samples, correct, samples) over every process."""
        # Augmentation and dropout draw from a stream fixed by (seed, epoch, rank): a resumed
        # run repeats it exactly, and no two processes augment alike.
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank()]).generate_state(1)[0]))
        self.sampler.set_epoch(epoch)
        order = list(self.sampler)
        self.net.train()
        if freeze_bn:
            # Small batches give noisy batch statistics; ImageNet's running ones are
            # a better estimate for the first epochs of a small data set.
            _set_bn_eval(self.model)
        sums = torch.zeros(3, dtype=torch.float64)  # loss x samples, correct, samples
        desc, quiet = f"fine-tune {epoch}/{epochs}", not is_main_process()
        for step in tqdm(self.steps, desc=desc, unit="step", disable=quiet):
            sums += self.run(step, order, self.opt)
            self.sched.step()
        return sum_across(sums)

    def run(self, step: list[list[int]], order: list[int], opt) -> torch.Tensor:
        """One optimiser step over its micro-batches; returns (loss x samples, correct, n)."""
        refresh_threads()  # under torchrun OMP_NUM_THREADS is set: a no-op
        step_idx = [order[i] for batch in step for i in batch]
        # The step's loss is a mean over the global batch: its denominator (the samples'
        # class weights, or their count) is summed over every process.
        y_step = self.labels[step_idx]
        cw = self.class_weight
        local = cw[y_step].sum().item() if cw is not None else len(y_step)
        denom, count = sum_across(torch.tensor([local, len(y_step)])).tolist()
        sums = torch.zeros(3, dtype=torch.float64)
        opt.zero_grad(set_to_none=True)
        for j, batch in enumerate(step):
            x, y = _collate(self.data, [order[i] for i in batch])
            x, y = self.norm(x.to(self.device)), y.to(self.device)
            last = j == len(step) - 1
            # Gradients are exchanged once per step, after the last micro-batch.
            sync = (
                contextlib.nullcontext()
                if last or self.net is self.model
                else cast(DistributedDataParallel, self.net).no_sync()  # not the model: DDP
            )
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                    logits = self.net(x)
                losses = F.cross_entropy(
                    logits.float(),
                    y,
                    weight=self.weight,
                    label_smoothing=self.label_smoothing,
                    reduction="none",
                )
                # DDP averages gradients over processes: x world makes that a sum.
                (losses.sum() * self.world / denom).backward()
            correct = (logits.argmax(1) == y).sum().item()
            sums += torch.tensor([losses.sum().item() * count / denom, correct, len(y)])
        opt.step()
        return sums

    def validate(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Valid loss and accuracy, each process scoring its shard."""
        shard = shard_range(len(labels))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            # In micro-batches too: at predict_logits' default of 64 pictures the two
            # backbones' activations added ~0.37 GB to the stage's peak RSS, and glibc
            # (config.tune_malloc) keeps what it once held.
            logits = predict_logits(
                self.model,
                images[shard.start : shard.stop],
                self.norm,
                self.micro,
                device=self.device,
            )
        return _evaluate_logits(gather_rows(logits, len(labels)), labels, self.class_weight)


def fine_tune(
    model: nn.Module,
    norm: Normalize,
    train_images: torch.Tensor,
    train_y: torch.Tensor,
    valid_images: torch.Tensor,
    valid_y: torch.Tensor,
    augment: Callable | None,
    epochs: int,
    lr: float = 1e-4,
    backbone_lr_scale: float = 0.1,
    weight_decay: float = 1e-4,
    batch_size: int = 32,
    schedule: str = "cosine",
    warmup: float = 0.1,
    label_smoothing: float = 0.0,
    patience: int = 3,
    freeze_bn: bool = True,
    freeze: float = 0.0,
    checkpoint: Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    class_weight: torch.Tensor | None = None,
    micro_batch_size: int | None = None,
    amp: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train the whole net with augmentation; the head learns faster than the body.

    `batch_size` is the global batch. Under torchrun each of N processes takes 1/N of it
    and DistributedDataParallel combines their gradients; each process runs its share in
    micro-batches of at most `micro_batch_size` samples and accumulates, so an optimiser
    step sees the same batch and the same loss whatever N and however little memory.
    `amp`: bfloat16 autocast where the device is a GPU that has it. `freeze`: the share of
    each backbone's early layer groups that stays fixed (0 = the whole net learns).

    After every epoch the full state goes to `checkpoint` (from rank 0), and a run
    that finds one there continues from it: an interrupted `dvc repro` resumes instead of
    restarting. `on_epoch` gets each epoch's row once, a resumed run's earlier rows first.
    """
    run = _Epochs.create(
        model, norm, train_images, train_y, augment, device, epochs=epochs, lr=lr,
        backbone_lr_scale=backbone_lr_scale, weight_decay=weight_decay, batch_size=batch_size,
        micro_batch_size=micro_batch_size, schedule=schedule, warmup=warmup,
        label_smoothing=label_smoothing, class_weight=class_weight, seed=seed, amp=amp,
        freeze=freeze,
    )  # fmt: skip
    stopper, saved = EarlyStopping(patience), Checkpoint(checkpoint)
    history, start = saved.restore(model, run.opt, run.sched, stopper)
    if on_epoch is not None:
        for row in history:  # epochs of the interrupted run: logged once, before the new ones
            on_epoch(row)
    for epoch in range(start, epochs + 1):
        if stopper.patience > 0 and stopper.bad_epochs >= stopper.patience:
            break  # the checkpoint was written by an epoch that already decided to stop
        t0 = time.perf_counter()
        total, correct, seen = run.epoch(epoch, epochs, seed, freeze_bn).tolist()
        valid_loss, valid_acc = run.validate(valid_images, valid_y)
        history.append(
            {
                "phase": "finetune",
                "epoch": epoch,
                "train_loss": total / seen,
                "train_acc": correct / seen,
                "valid_loss": valid_loss,
                "valid_acc": valid_acc,
                "seconds": time.perf_counter() - t0,
            }
        )
        if on_epoch is not None:
            on_epoch(history[-1])
        stop = stopper.step(epoch, valid_loss, model)
        saved.save(model, run.opt, run.sched, stopper, history, epoch)
        if stop:
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    return history


def _step_batches(
    order: list[int], share: int, micro: int, drop_last: bool
) -> list[list[list[int]]]:
    """Positions in one process's sample order, per optimiser step, per micro-batch.

    `drop_last`: leave out the short final step (as the one-process loader always did when
    there is more than one batch of data).
    """
    n = len(order) // share if drop_last else math.ceil(len(order) / share)
    steps = [order[k * share : (k + 1) * share] for k in range(n)]
    return [[idx[i : i + micro] for i in range(0, len(idx), micro)] for idx in steps]


def _collate(data: TensorImages, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [data[i] for i in idx]
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def head_settings(head: HeadParams) -> dict:
    """fit_head's keyword arguments from params.yaml's `train.head` (flip_views and
    degraded_views shape its inputs instead)."""
    return head.model_dump(exclude={"flip_views", "degraded_views"})


def head_features(
    sources: list, train: Split, valid: Split, tp: TrainParams, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head's training features (original, flipped and degraded views, as `tp.head`
    asks), their labels, and the valid features; each view is cached."""
    bs, bf16 = tp.batch_size, use_bf16(tp.bf16_features)
    # The backbone is frozen in phase 1, so its features are a pure function of
    # (weights, size, normalisation, image): computed once, reused by every later run.
    f_train = frozen_features(sources, train, bs, bf16=bf16)
    y_head = train.labels
    if tp.head.flip_views:
        f_train = torch.cat([f_train, frozen_features(sources, train, bs, True, bf16)])
        y_head = torch.cat([y_head, y_head])
    for k in range(tp.head.degraded_views):
        # Small, blurred, compressed, dark copies: the head learns from faces as cameras
        # at entrances deliver them, and the backbone runs on each copy once (cached).
        view = named_degraded_view(k, seed, tp.degrade)
        f_train = torch.cat([f_train, frozen_features(sources, train, bs, bf16=bf16, view=view)])
        y_head = torch.cat([y_head, train.labels])
    return f_train, y_head, frozen_features(sources, valid, bs, bf16=bf16)


def transfer_learn(
    model: nn.Module,
    train: Split,
    valid: Split,
    tp: TrainParams,
    n_classes: int,
    feature_root: Path,
    seed: int,
    checkpoint: Path | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[list[dict], dict[str, float]]:
    """Phase 1, a linear head on frozen features (cached); phase 2, optional fine-tune.

    `tp` is params.yaml's `train` section; frozen features are cached under `feature_root`.
    Under a process group (`init_distributed`) the feature extraction and the fine-tune are
    shared between the processes; the head, seconds of matrix products, runs in each.
    The backbone runs on `device`; the model comes back on the CPU. `on_epoch` gets every
    epoch's row, head then fine-tune (give it in one process only).
    Returns the per-epoch history and the seconds spent per phase.
    """
    t0 = time.perf_counter()
    sources = feature_sources(feature_root, model.to(device), train.images.shape[-1])
    f_train, y_head, f_valid = head_features(sources, train, valid, tp, seed)
    weight = class_weights(train.labels, n_classes, tp.class_weights)
    model.cpu()  # the head trains on the CPU, next to its features
    t1 = time.perf_counter()
    history = fit_head(
        cast(nn.Linear, timm_net(model).get_classifier()),  # n_classes outputs: a Linear
        f_train,
        y_head,
        f_valid,
        valid.labels,
        class_weight=weight,
        on_epoch=on_epoch,
        **head_settings(tp.head),
    )
    t2 = time.perf_counter()
    # The head's features (~0.15 GB for the default) are not needed by the fine-tune:
    # freed, the fine-tune's activations reuse their memory instead of adding to the peak.
    del f_train, f_valid, y_head
    ft = tp.finetune
    if ft.epochs > 0:
        cfg = timm_net(model).pretrained_cfg
        augment = ft.augment.model_dump()
        history += fine_tune(
            model,
            Normalize(cfg["mean"], cfg["std"]),
            train.images,
            train.labels,
            valid.images,
            valid.labels,
            create_augment(train.images.shape[-1], **augment, degrade_cfg=tp.degrade),
            checkpoint=checkpoint,
            seed=seed,
            class_weight=weight,
            device=device,
            on_epoch=on_epoch,
            **ft.model_dump(exclude={"augment"}),
        )
    model.cpu()
    t3 = time.perf_counter()
    return history, {"features": t1 - t0, "head": t2 - t1, "finetune": t3 - t2}
