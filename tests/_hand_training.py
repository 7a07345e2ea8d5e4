"""Helpers for the trainer tests: small synthetic configurations and full-batch SGD written by hand."""

import math

import torch
from torch.nn import functional as F

from lyaptune.data import load_dataset
from lyaptune.models import create_model
from lyaptune.train import TrialConfig


def synthetic_config(dataset_args, **kw):
    """A CPU trial on the synthetic dataset with ``dataset_args``; ``kw`` overrides any field."""
    base = dict(
        dataset="synthetic",
        dataset_args=dataset_args,
        validation_fraction=0.2,
        model="fc",
        model_args={"depth": 2, "width": 8},
        optimizer="sgd",
        optimizer_args={"lr": 0.5},
        epochs=3,
        device="cpu",
    )
    base.update(kw)
    return TrialConfig(**base)


def hand_full_batch_sgd(config):
    """Full-batch SGD by hand in float64, independent of the trainer: per epoch, at the weights reached,
    ``train_loss``, ``grad_norm`` (global L2), ``grad_max`` (largest |entry|), ``weight_norm``,
    ``val_loss`` and ``test_acc``."""
    data = load_dataset(
        config.dataset,
        validation_fraction=config.validation_fraction,
        seed=config.data_seed,
        **dict(config.dataset_args),
    )
    torch.manual_seed(config.seed)
    model = create_model(
        config.model,
        input_shape=tuple(data.input_shape),
        num_classes=data.num_classes,
        generator=torch.Generator().manual_seed(config.seed),
        **dict(config.model_args),
    ).double()
    params = list(model.parameters())
    lr = config.optimizer_args["lr"]
    x, y = data.train.x.double(), data.train.y

    def loss_grads():
        loss = F.cross_entropy(model(x), y)
        return loss.item(), torch.autograd.grad(loss, params)

    out = []
    for _ in range(config.epochs):
        _, step = loss_grads()
        with torch.no_grad():
            for p, g in zip(params, step):
                p -= lr * g
        loss, g = loss_grads()
        with torch.no_grad():
            out.append(
                {
                    "train_loss": loss,
                    "grad_norm": math.sqrt(sum(float((gi**2).sum()) for gi in g)),
                    "grad_max": max(float(gi.abs().max()) for gi in g),
                    "weight_norm": math.sqrt(sum(float((p**2).sum()) for p in params)),
                    "val_loss": F.cross_entropy(model(data.val.x.double()), data.val.y).item(),
                    "test_acc": (model(data.test.x.double()).argmax(1) == data.test.y).double().mean().item(),
                }
            )
    return out
