"""Several trained models answering as one: the mean of their calibrated logits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from facemask.models.factory import (
    ConcatBackbones,
    ModelCard,
    _classifier_prefixes,
    build_model,
    load_model,
    timm_net,
)


def join_members(
    models: Sequence[nn.Module], cards: Sequence[ModelCard], names: Sequence[str] = ()
) -> tuple[ConcatBackbones, ModelCard]:
    """One net whose logits are the mean over the members of z_i / T_i (each member's logits
    at its own temperature).

    The mean of linear heads is a linear head on the members' features side by side, so the
    ensemble is joined backbones (`a+b+...`, factory.ConcatBackbones) with the head
    [W_1/T_1, ..., W_n/T_n] / n and bias mean(b_i / T_i): it saves, loads, exports and
    explains like any joined model, and no stage needs to know it is an ensemble. Its card
    starts at temperature 1; the caller fits one for the mean. `names` (the files) name a
    member that does not fit the first.
    """
    if len(models) < 2 or len(models) != len(cards):
        raise ValueError(f"an ensemble joins 2 or more models with their cards, got {len(models)}")
    first, n = cards[0], len(models)
    names = list(names) or [f"member {i}" for i in range(n)]
    for name, card in zip(names[1:], cards[1:], strict=True):
        if (card.classes, card.image_size, card.crop_margin) != (
            first.classes, first.image_size, first.crop_margin,
        ):  # fmt: skip
            raise ValueError(
                f"{name}: classes {card.classes} at {card.image_size} px, crop margin "
                f"{card.crop_margin}; {names[0]} has {first.classes} at {first.image_size} px, "
                f"{first.crop_margin}: members must agree"
            )
    name = "+".join(card.model for card in cards)
    joined = build_model(name, len(first.classes))
    assert isinstance(joined, ConcatBackbones)  # `name` joins 2 or more: a+b
    weights, bias = [], torch.zeros(len(first.classes))
    with torch.no_grad():
        for branch, model, card in zip(joined.backbones, models, cards, strict=True):
            skip = _classifier_prefixes(model)
            branch.load_state_dict(
                {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
            )
            head = cast(nn.Linear, timm_net(model).get_classifier())  # linear heads (above)
            weights.append(head.weight / (card.temperature * n))
            bias += head.bias / (card.temperature * n)
        out = cast(nn.Linear, joined.head)  # len(classes) outputs: a Linear
        out.weight.copy_(torch.cat(weights, 1))
        out.bias.copy_(bias)
    card = ModelCard(
        name, list(first.classes), first.image_size, first.mean, first.std,
        " + ".join(card.weights for card in cards), temperature=1.0,
        abstain=first.abstain, crop_margin=first.crop_margin,
    )  # fmt: skip
    return joined.eval(), card


def load_members(paths: Sequence[str | os.PathLike]) -> tuple[ConcatBackbones, ModelCard]:
    """join_members of saved models (a file that does not fit is named)."""
    loaded = [load_model(p) for p in paths]
    return join_members([m for m, _ in loaded], [c for _, c in loaded], [str(p) for p in paths])
