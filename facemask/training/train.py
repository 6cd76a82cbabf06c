"""Training loops: a linear head on cached features, then optional whole-net fine-tuning."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from facemask.data.cache import Normalize, Split
from facemask.models.predict import predict_logits
from facemask.training.augment import TensorImages, create_augment
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
def _evaluate_logits(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


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
) -> list[dict]:
    """Train a linear classifier on fixed features; keep the weights with best valid loss.

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
            logits = head(F.dropout(train_x[idx], dropout, training=True))
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
            valid_loss, valid_acc = _evaluate_logits(head(valid_x), valid_y)
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
        if stopper.step(epoch, valid_loss, head):
            break
    head.load_state_dict(stopper.best_state)
    return history


def _set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


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
    checkpoint: Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    class_weight: torch.Tensor | None = None,
) -> list[dict]:
    """Train the whole net with augmentation; the head learns faster than the body.

    After every epoch the full state goes to `checkpoint`, and a run that finds one
    there continues from it: an interrupted `dvc repro` resumes instead of restarting.
    """
    head_params = list(model.get_classifier().parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if id(p) not in head_ids]
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": body_params, "lr": lr * backbone_lr_scale}, {"params": head_params, "lr": lr}],
        weight_decay=weight_decay,
    )
    loader = torch.utils.data.DataLoader(
        TensorImages(train_images, train_y, augment),
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_y) > batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    sched = _schedule(opt, schedule, epochs * len(loader), warmup)
    stopper, history, start = EarlyStopping(patience), [], 1
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        loader.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history, start = state["history"], state["epoch"] + 1
        stopper.best_loss, stopper.best_epoch = state["best_loss"], state["best_epoch"]
        stopper.best_state, stopper.bad_epochs = state["best_state"], state["bad_epochs"]
        print(f"resuming fine-tune from {checkpoint} after epoch {state['epoch']}")
    model.to(device)
    for epoch in range(start, epochs + 1):
        if stopper.patience > 0 and stopper.bad_epochs >= stopper.patience:
            break  # the checkpoint was written by an epoch that already decided to stop
        t0 = time.perf_counter()
        model.train()
        if freeze_bn:
            # Small batches give noisy batch statistics; ImageNet's running ones are
            # a better estimate for the first epochs of a small data set.
            _set_bn_eval(model)
        total, correct, seen = 0.0, 0, 0
        for x, y in tqdm(loader, desc=f"fine-tune {epoch}/{epochs}", unit="batch"):
            x, y = norm(x.to(device)), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, weight=class_weight, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        logits = predict_logits(model, valid_images, norm, device=device)
        valid_loss, valid_acc = _evaluate_logits(logits, valid_y)
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
        stop = stopper.step(epoch, valid_loss, model)
        if checkpoint is not None:
            _save_checkpoint(
                checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": loader.generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "epoch": epoch,
                    "best_loss": stopper.best_loss,
                    "best_epoch": stopper.best_epoch,
                    "best_state": stopper.best_state,
                    "bad_epochs": stopper.bad_epochs,
                },
            )
        if stop:
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    return history


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# params.yaml `train.head` keys that fit_head takes (flip_views shapes its inputs instead).
HEAD_KEYS = ("epochs", "lr", "weight_decay", "dropout", "label_smoothing", "patience")


def head_settings(head: dict) -> dict:
    """fit_head's keyword arguments from params.yaml's `train.head`."""
    return {k: head[k] for k in HEAD_KEYS}


def transfer_learn(
    model: nn.Module,
    train: Split,
    valid: Split,
    tp: dict,
    n_classes: int,
    feature_root: Path,
    seed: int = 0,
    checkpoint: Path | None = None,
) -> tuple[list[dict], dict[str, float]]:
    """Phase 1, a linear head on frozen features (cached); phase 2, optional fine-tune.

    `tp` is params.yaml's `train` section; frozen features are cached under `feature_root`.
    Returns the per-epoch history and the seconds spent per phase.
    """
    cfg = model.pretrained_cfg
    norm = Normalize(cfg["mean"], cfg["std"])
    h, ft, bs = tp["head"], tp["finetune"], tp["batch_size"]
    bf16 = use_bf16(tp)
    t0 = time.perf_counter()
    # The backbone is frozen in phase 1, so its features are a pure function of
    # (weights, size, normalisation, image): computed once, reused by every later run.
    sources = feature_sources(feature_root, model, train.images.shape[-1])
    f_train = frozen_features(sources, train, bs, bf16=bf16)
    y_head = train.labels
    if h["flip_views"]:
        flipped = frozen_features(sources, train, bs, True, bf16)
        f_train, y_head = torch.cat([f_train, flipped]), torch.cat([y_head, y_head])
    f_valid = frozen_features(sources, valid, bs, bf16=bf16)
    weight = class_weights(train.labels, n_classes, tp.get("class_weights"))
    t1 = time.perf_counter()
    history = fit_head(
        model.get_classifier(),
        f_train,
        y_head,
        f_valid,
        valid.labels,
        class_weight=weight,
        **head_settings(h),
    )
    t2 = time.perf_counter()
    if ft["epochs"] > 0:
        keys = (
            "lr",
            "backbone_lr_scale",
            "weight_decay",
            "batch_size",
            "schedule",
            "warmup",
            "label_smoothing",
            "patience",
            "freeze_bn",
        )
        history += fine_tune(
            model,
            norm,
            train.images,
            train.labels,
            valid.images,
            valid.labels,
            create_augment(train.images.shape[-1], **ft["augment"]),
            epochs=ft["epochs"],
            checkpoint=checkpoint,
            seed=seed,
            class_weight=weight,
            **{k: ft[k] for k in keys},
        )
    t3 = time.perf_counter()
    return history, {"features": t1 - t0, "head": t2 - t1, "finetune": t3 - t2}
