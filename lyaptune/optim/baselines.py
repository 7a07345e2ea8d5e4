"""The baseline optimizers of papers/000 and papers/003, registered from torch.optim and
pytorch-optimizer (not rewritten; METHODS.md section 6)."""

from __future__ import annotations

import pytorch_optimizer
import torch

from lyaptune.optim._registry import register_optimizer

_LR_ADAM = {"low": 1e-5, "high": 1e-1, "log": True}
_BETA1 = {"low": 0.8, "high": 0.99}
_BETA2 = {"low": 0.9, "high": 0.9999}

register_optimizer(
    "adam",
    defaults={"lr": 1e-3},
    space={"lr": _LR_ADAM, "beta1": _BETA1, "beta2": _BETA2},
    tuple_params={"betas": ("beta1", "beta2")},
    description="Adam (torch.optim.Adam)",
    reference="Kingma & Ba 2015; the optimizer of papers/003",
)(torch.optim.Adam)
register_optimizer(
    "adamw",
    defaults={"lr": 1e-3, "weight_decay": 1e-2},
    space={
        "lr": _LR_ADAM,
        "beta1": _BETA1,
        "beta2": _BETA2,
        "weight_decay": {"low": 1e-5, "high": 1e-1, "log": True},
    },
    tuple_params={"betas": ("beta1", "beta2")},
    description="AdamW, decoupled weight decay (torch.optim.AdamW)",
    reference="Loshchilov & Hutter 2019; baseline of papers/000 and 001",
)(torch.optim.AdamW)
register_optimizer(
    "adagrad",
    defaults={"lr": 1e-2},
    space={"lr": {"low": 1e-4, "high": 1.0, "log": True}},
    description="AdaGrad (torch.optim.Adagrad)",
    reference="Duchi et al. 2011; baseline of papers/000",
)(torch.optim.Adagrad)
register_optimizer(
    "sgd",
    defaults={"lr": 1e-2, "momentum": 0.0},
    space={"lr": {"low": 1e-4, "high": 1.0, "log": True}, "momentum": {"low": 0.0, "high": 0.99}},
    description="SGD with optional (heavy-ball / Nesterov) momentum (torch.optim.SGD)",
    reference="baseline of papers/002",
)(torch.optim.SGD)
register_optimizer(
    "adabelief",
    defaults={"lr": 1e-3, "eps": 1e-16, "rectify": False},
    space={"lr": _LR_ADAM, "beta1": _BETA1, "beta2": _BETA2},
    tuple_params={"betas": ("beta1", "beta2")},
    description="AdaBelief (pytorch-optimizer; eps 1e-16, rectify off)",
    reference="Zhuang et al. 2020; baseline of papers/000",
)(pytorch_optimizer.AdaBelief)
register_optimizer(
    "adan",
    defaults={"lr": 1e-3, "betas": (0.98, 0.92, 0.99)},
    space={"lr": _LR_ADAM},
    tuple_params={"betas": ("beta1", "beta2", "beta3")},
    description="Adan (pytorch-optimizer; betas (0.98, 0.92, 0.99) in its convention)",
    reference="Xie et al. 2022; baseline of papers/000",
)(pytorch_optimizer.Adan)
register_optimizer(
    "lion",
    defaults={"lr": 1e-4, "betas": (0.9, 0.99)},
    space={
        "lr": {"low": 1e-6, "high": 1e-2, "log": True},
        "beta1": _BETA1,
        "beta2": {"low": 0.9, "high": 0.999},
    },
    tuple_params={"betas": ("beta1", "beta2")},
    description="Lion (pytorch-optimizer)",
    reference="Chen et al. 2023; baseline of papers/001 and RLO's special case",
)(pytorch_optimizer.Lion)
