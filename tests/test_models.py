"""Tests of the model registry: architectures against hand-counted parameters, init schemes, errors."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from lyaptune.errors import ConfigError
from lyaptune.models import (
    ModelInfo,
    create_model,
    default_sigma,
    get_model_info,
    is_small,
    list_models,
    parse_init,
)

# One row per registered model: input shape, classes, model args. Drives the generic tests.
MODEL_CASES = {
    "fc": ((1, 28, 28), 10, {"depth": 2, "width": 32}),
    "lenet": ((1, 28, 28), 10, {}),
    "vgg9": ((3, 32, 32), 10, {}),
    "vgg16": ((3, 32, 32), 10, {}),
    "resnet18": ((3, 32, 32), 10, {}),
    "resnet50": ((3, 32, 32), 100, {}),
    "vit": ((3, 32, 32), 10, {"variant": "tiny"}),
    "vit-s16": ((3, 32, 32), 10, {}),
    "vit-b16": ((3, 32, 32), 10, {}),
}
SLOW_MODELS = {"resnet50", "vit-b16"}
VIT_ALIASES = {"vit-s16": 384, "vit-b16": 768}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def test_every_registered_model_is_in_the_table():
    assert sorted(MODEL_CASES) == list_models()


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in MODEL_CASES],
)
def test_forward_shape(name):
    shape, classes, args = MODEL_CASES[name]
    model = create_model(name, input_shape=shape, num_classes=classes, **args)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    if name in VIT_ALIASES:  # ViT-S/16 and ViT-B/16: patch 16 whatever the image size
        assert model.patch_embed.patch_size == (16, 16)
        assert model.embed_dim == VIT_ALIASES[name]
    info = get_model_info(name)
    assert isinstance(info, ModelInfo) and info.name == name
    assert info.description and info.reference


def test_model_info_pickles():
    for name in list_models():
        info = pickle.loads(pickle.dumps(get_model_info(name)))
        assert info.name == name and dict(info.args) == dict(get_model_info(name).args)


# --------------------------------------------------------------------------------------------------
# architectures against hand counts


@pytest.mark.parametrize(
    "shape, depth, width, classes",
    [((1, 28, 28), 0, 1000, 10), ((1, 28, 28), 1, 1000, 10), ((1, 28, 28), 3, 1000, 10), ((64,), 5, 7, 3),
     ((3, 8, 8), 2, 50, 100)],
)  # fmt: skip
def test_fc_parameter_count(shape, depth, width, classes):
    d = math.prod(shape)
    if depth == 0:
        expected = d * classes + classes
    else:
        expected = (d * width + width) + (depth - 1) * (width * width + width) + (width * classes + classes)
    model = create_model("fc", input_shape=shape, num_classes=classes, depth=depth, width=width)
    assert n_params(model) == expected
    assert model(torch.randn(4, *shape)).shape == (4, classes)


def test_fc_depth0_is_logistic_regression_and_forward_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    model = create_model("fc", input_shape=(2, 3), num_classes=4, depth=0, generator=gen).double()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].weight.shape == (4, 6)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    w, b = linears[0].weight.detach().numpy(), linears[0].bias.detach().numpy()
    expected = x.reshape(5, 6) @ w.T + b
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_fc_forward_matches_numpy_relu_network():
    model = create_model("fc", input_shape=(7,), num_classes=3, depth=2, width=5).double()
    ws = [
        (m.weight.detach().numpy(), m.bias.detach().numpy())
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    assert [w.shape for w, _ in ws] == [(5, 7), (5, 5), (3, 5)]
    x = np.random.default_rng(2).standard_normal((6, 7))
    h = x
    for w, b in ws[:-1]:
        h = np.maximum(h @ w.T + b, 0.0)
    expected = h @ ws[-1][0].T + ws[-1][1]
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 32, 32), (3, 32, 32)])
def test_lenet_parameter_count(shape):
    c = shape[0]
    # 28x28 is padded by 2, so both sizes reach 5x5x16 after conv5-pool2-conv5-pool2
    expected = conv(c, 6, 5) + conv(6, 16, 5) + linear(16 * 5 * 5, 120) + linear(120, 84) + linear(84, 10)
    model = create_model("lenet", input_shape=shape, num_classes=10)
    assert n_params(model) == expected
    assert model(torch.randn(2, *shape)).shape == (2, 10)
    if shape == (1, 28, 28):
        assert expected == 61706  # the classic LeNet-5 count on MNIST


def test_lenet_padding_argument():
    model = create_model("lenet", input_shape=(1, 28, 28), num_classes=10, padding=0)
    # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4
    expected = conv(1, 6, 5) + conv(6, 16, 5) + linear(16 * 4 * 4, 120) + linear(120, 84) + linear(84, 10)
    assert n_params(model) == expected


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg9_standard_parameter_count(batch_norm):
    convs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512)]
    expected = sum(conv(i, o) for i, o in convs) + linear(512, 512) + linear(512, 10)
    if batch_norm:
        expected += sum(2 * o for _, o in convs) + 2 * 512
    model = create_model("vgg9", input_shape=(3, 32, 32), num_classes=10, batch_norm=batch_norm)
    assert n_params(model) == expected
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    n_lin = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert (n_conv, n_lin) == (7, 2)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == batch_norm


def test_vgg9_loss_landscape_parameter_count():
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    expected = sum(conv(i, o) for i, o in convs) + linear(256 * 4 * 4, 256) + linear(256, 10)
    model = create_model("vgg9", input_shape=(3, 32, 32), num_classes=10, layout="loss-landscape")
    assert n_params(model) == expected


def test_vgg9_on_mnist_sized_input():
    model = create_model("vgg9", input_shape=(1, 28, 28), num_classes=10)
    # ceil-mode pools: 28 -> 14 -> 7 -> 4 -> 2 -> 1, so the head is still Linear(512, 512)
    convs = [(1, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512)]
    assert n_params(model) == sum(conv(i, o) for i, o in convs) + linear(512, 512) + linear(512, 10)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_vgg16_parameter_count():
    cfg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    chans = [3, *cfg]
    expected = sum(conv(i, o) + 2 * o for i, o in zip(chans[:-1], chans[1:])) + linear(512, 10)
    model = create_model("vgg16", input_shape=(3, 32, 32), num_classes=10)
    assert n_params(model) == expected == 14_728_266  # the published count of the CIFAR VGG-16 (BN)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13


def test_resnet18_cifar_stem_and_count():
    model = create_model("resnet18", input_shape=(3, 32, 32), num_classes=10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    # the CIFAR ResNet-18 count of Kuang Liu's pytorch-cifar, which uses this stem
    assert n_params(model) == 11_173_962


def test_resnet_imagenet_stem_and_in_chans():
    model = create_model("resnet18", input_shape=(1, 96, 96), num_classes=5)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.MaxPool2d)
    # torchvision's ImageNet count 11,689,512, less the 3-channel stem and 1000-way head
    assert n_params(model) == 11_689_512 - 64 * 3 * 49 + 64 * 1 * 49 - linear(512, 1000) + linear(512, 5)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 96, 96)).shape == (2, 5)
    small = create_model("resnet18", input_shape=(3, 96, 96), num_classes=5, cifar_stem=True)
    assert small.conv1.kernel_size == (3, 3)


@pytest.mark.slow
def test_resnet50_cifar_count():
    model = create_model("resnet50", input_shape=(3, 32, 32), num_classes=10)
    assert n_params(model) == 23_520_842  # pytorch-cifar's ResNet-50 count


def test_vit_tiny_parameter_count():
    d, c, p, classes = 192, 3, 4, 10
    tokens = (32 // p) ** 2
    block = 2 * (2 * d) + linear(d, 3 * d) + linear(d, d) + linear(d, 4 * d) + linear(4 * d, d)
    expected = (c * p * p * d + d) + d + (tokens + 1) * d + 12 * block + 2 * d + linear(d, classes)
    model = create_model("vit", input_shape=(3, 32, 32), num_classes=classes, variant="tiny")
    assert model.patch_embed.patch_size == (4, 4)
    assert n_params(model) == expected


def test_vit_patch_and_img_size_arguments():
    model = create_model("vit", input_shape=(1, 28, 28), num_classes=10, variant="tiny", patch_size=7)
    assert model.patch_embed.num_patches == 16
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # above 32 px the default patch is 16
    model = create_model("vit", input_shape=(3, 48, 48), num_classes=10, variant="tiny")
    assert model.patch_embed.patch_size == (16, 16) and model.patch_embed.num_patches == 9
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 10)


# --------------------------------------------------------------------------------------------------
# initialisation


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _biases(model: nn.Module) -> list[torch.Tensor]:
    return [m.bias for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]


def test_init_normal_sigma():
    gen = torch.Generator().manual_seed(0)
    model = create_model(
        "fc",
        input_shape=(784,),
        num_classes=10,
        depth=2,
        width=1000,
        init="normal",
        sigma=0.04,
        generator=gen,
    )
    for w in _weights(model):
        std = w.detach().double().std().item()
        assert abs(std - 0.04) / 0.04 < 0.05
        assert abs(w.detach().double().mean().item()) < 0.04 * 5 / math.sqrt(w.numel())
    for b in _biases(model):
        assert torch.count_nonzero(b) == 0


def test_init_normal_spec_string_and_default_sigma():
    kw = {"input_shape": (784,), "num_classes": 10, "depth": 1, "width": 500}
    a = create_model("fc", init="normal(0.04)", generator=torch.Generator().manual_seed(3), **kw)
    b = create_model("fc", init="normal", sigma=0.04, generator=torch.Generator().manual_seed(3), **kw)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    # no sigma: the model's default (0.1 for lenet)
    lenet = create_model("lenet", input_shape=(1, 28, 28), num_classes=10, init="normal")
    std = lenet.classifier[0].weight.detach().double().std().item()
    assert abs(std - 0.1) / 0.1 < 0.05


def test_init_uniform_spec():
    model = create_model("fc", input_shape=(784,), num_classes=10, depth=1, width=500, init="uniform(0.05)")
    for w in _weights(model):
        assert w.abs().max().item() <= 0.05
    w = _weights(model)[0].detach().double()
    assert abs(w.std().item() - 0.05 / math.sqrt(3)) / (0.05 / math.sqrt(3)) < 0.02


def test_init_kaiming_uniform_bounds():
    model = create_model("lenet", input_shape=(1, 28, 28), num_classes=10, init="kaiming-uniform")
    model_fc = create_model(
        "fc", input_shape=(784,), num_classes=10, depth=2, width=300, init="kaiming-uniform"
    )
    for m in [*model.modules(), *model_fc.modules()]:
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        fan_in = m.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)  # sqrt(6 / ((1 + 5) * fan_in)) for a = sqrt(5)
        w = m.weight.detach()
        assert w.abs().max().item() <= bound + 1e-7
        assert m.bias.abs().max().item() <= bound + 1e-7
        if w.numel() >= 10_000:  # the bound is attained, not just respected
            assert w.abs().max().item() > 0.99 * bound
            assert abs(w.double().std().item() - bound / math.sqrt(3)) < 0.03 * bound


def test_init_orthogonal_square_layer():
    model = create_model("fc", input_shape=(64,), num_classes=64, depth=2, width=64, init="orthogonal")
    for w in _weights(model):
        w64 = w.detach().double().numpy()
        np.testing.assert_allclose(w64 @ w64.T, np.eye(64), atol=1e-5)


@pytest.mark.parametrize("init", [None, "kaiming-normal", "xavier", "orthogonal", "normal", "init"])
def test_generator_seed_reproducible(init):
    def build(seed):
        return create_model(
            "lenet",
            input_shape=(1, 28, 28),
            num_classes=10,
            init=init,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = build(5), build(5), build(6)
    pa, pb, pc = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_generator_leaves_global_rng_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    create_model("fc", input_shape=(10,), num_classes=2, width=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


def test_init_none_keeps_model_initialisation():
    torch.manual_seed(0)
    model = create_model("fc", input_shape=(784,), num_classes=10, depth=1, width=200)
    w = model[1].weight.detach()
    bound = 1 / math.sqrt(784)
    assert w.abs().max().item() <= bound and model[1].bias.abs().max().item() <= bound
    assert torch.count_nonzero(model[1].bias) > 0  # PyTorch's own bias init, not zeros


def test_parse_init():
    assert parse_init("normal(0.04)") == ("normal", 0.04, None)
    assert parse_init("uniform( 0.5 )") == ("uniform", None, 0.5)
    assert parse_init("xavier") == ("xavier", None, None)


# --------------------------------------------------------------------------------------------------
# sigma, is_small


def test_default_sigma():
    assert default_sigma("fc") == 0.04
    assert default_sigma("lenet") == 0.1
    assert default_sigma("vgg9") == 0.045
    for name in ("vgg16", "resnet18", "resnet50", "vit", "vit-s16", "vit-b16", "timm:resnet10t"):
        assert default_sigma(name) == 0.02


def test_is_small():
    # 784*1000+1000 + 4*(1000*1000+1000) + 1000*10+10 = 4,799,010 < 5M
    assert is_small(create_model("fc", input_shape=(784,), num_classes=10, depth=5, width=1000))
    # one more hidden layer: 5,800,010
    assert not is_small(create_model("fc", input_shape=(784,), num_classes=10, depth=6, width=1000))
    assert is_small(create_model("lenet", input_shape=(1, 28, 28), num_classes=10))
    assert not is_small(create_model("vgg9", input_shape=(3, 32, 32), num_classes=10))  # 7.1M
    bn = create_model(
        "vgg9", input_shape=(1, 28, 28), num_classes=10, layout="loss-landscape", batch_norm=True
    )
    assert n_params(bn) < 5_000_000 and not is_small(bn)
    assert not is_small(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)))
    assert is_small(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0), nn.Linear(4, 2)))


# --------------------------------------------------------------------------------------------------
# timm


def test_timm_model():
    info = get_model_info("timm:resnet10t")
    assert info.name == "timm:resnet10t" and dict(info.args) == {}
    model = create_model("timm:resnet10t", input_shape=(1, 32, 32), num_classes=7)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    model = create_model("timm:resnet10t", input_shape=(3, 32, 32), num_classes=7, drop_rate=0.1)
    assert model.drop_rate == 0.1
    assert "timm:resnet10t" in list_models("timm:resnet1*")


def test_timm_errors():
    with pytest.raises(ConfigError, match="unknown timm model 'resnet10tt'.*resnet10t"):
        create_model("timm:resnet10tt", input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ConfigError, match="unknown timm model"):
        get_model_info("timm:")
    with pytest.raises(ConfigError, match="not_an_arg"):
        create_model("timm:resnet10t", input_shape=(3, 32, 32), num_classes=10, not_an_arg=1)
    with pytest.raises(ConfigError, match="pretrained"):
        create_model("timm:resnet10t", input_shape=(3, 32, 32), num_classes=10, pretrained=True)
    with pytest.raises(ConfigError, match="'timm:resnet10t'"):
        create_model("resnet10t", input_shape=(3, 32, 32), num_classes=10)


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("fcc", {}, r"unknown model 'fcc'; did you mean 'fc'\?.*lenet"),
        ("fc", {"widht": 10}, r"'widht' for model 'fc'; did you mean 'width'\?.*depth \(default 3\)"),
        ("lenet", {"depth": 2}, r"'depth' for model 'lenet'.*padding"),
        ("fc", {"depth": -1}, r"depth for model 'fc': -1"),
        ("fc", {"width": 0}, r"width for model 'fc': 0"),
        ("fc", {"depth": 1.5}, r"depth for model 'fc': 1.5"),
        ("vgg9", {"layout": "li"}, r"layout.*'li'.*standard, loss-landscape"),
        ("vgg9", {"batch_norm": "yes"}, r"batch_norm for model 'vgg9': 'yes'"),
        ("vit", {"variant": "huge"}, r"variant.*'huge'.*tiny, small, base"),
        ("vit", {"patch_size": 5}, r"patch_size for model 'vit': 5 does not divide the image size 32x32"),
        ("resnet18", {"cifar_stem": 1}, r"cifar_stem for model 'resnet18': 1"),
    ],
)
def test_bad_model_or_args(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model(name, input_shape=(3, 32, 32), num_classes=10, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init": "normall"}, r"unknown init 'normall'; did you mean 'normal'\?"),
        ({"init": "normal(-1)"}, r"sigma in init 'normal\(-1\)'"),
        ({"init": "uniform(x)"}, r"a in init 'uniform\(x\)': 'x'"),
        ({"init": "uniform"}, r"uniform needs its half-width"),
        ({"init": "normal", "sigma": 0.0}, r"Invalid sigma: 0.0"),
        ({"init": "normal(0.1)", "sigma": 0.2}, r"Conflicting sigma"),
        ({"num_classes": 0}, r"num_classes: 0"),
        ({"input_shape": (0, 28, 28)}, r"input_shape: \(0, 28, 28\)"),
        ({"input_shape": (784,)}, r"input_shape for model 'lenet'.*\(C, H, W\)"),
        ({"input_shape": (1, 8, 8)}, r"input_shape for model 'lenet': \(1, 8, 8\) is too small"),
    ],
)
def test_bad_init_or_shape(kwargs, match):
    args = {"input_shape": (1, 28, 28), "num_classes": 10, **kwargs}
    with pytest.raises(ConfigError, match=match):
        create_model("lenet", **args)


def test_list_models_pattern():
    assert list_models("vit*") == ["vit", "vit-b16", "vit-s16"]
    assert list_models("resnet*") == ["resnet18", "resnet50"]


def test_lipschitz_sigma_is_the_given_one_else_the_models_default():
    """papers/003's sigmas: 0.04 for the MLPs, 0.1 for LeNet; a given sigma wins; no sigma for W other
    than normal (the run's engine and `lyaptune lipschitz` both use this rule)."""
    from lyaptune.models import lipschitz_sigma

    assert lipschitz_sigma("fc") == 0.04
    assert lipschitz_sigma("lenet") == 0.1
    assert lipschitz_sigma("fc", "normal", 0.5) == 0.5
    assert lipschitz_sigma("fc", "init") is None
    assert lipschitz_sigma("fc", "uniform") is None


@pytest.mark.parametrize(
    "layout, convs, hidden, flat",
    [
        ("standard", [(3, 8), (8, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 64)], 64, 64),
        ("loss-landscape", [(3, 8), (8, 8), (8, 16), (16, 16), (16, 32), (32, 32), (32, 32)], 32, 32 * 4 * 4),
    ],
)
def test_vgg9_width_divisor_divides_every_width(layout, convs, hidden, flat):
    model = create_model("vgg9", input_shape=(3, 32, 32), num_classes=10, layout=layout, width_divisor=8)
    assert n_params(model) == sum(conv(i, o) for i, o in convs) + linear(flat, hidden) + linear(hidden, 10)
    with pytest.raises(ConfigError, match=r"width_divisor for model 'vgg9': 0 \(must be an integer >= 1\)"):
        create_model("vgg9", input_shape=(3, 32, 32), num_classes=10, width_divisor=0)


def test_vgg16_width_divisor():
    model = create_model("vgg16", input_shape=(3, 32, 32), num_classes=10, batch_norm=False, width_divisor=4)
    chans = [c // 4 for c in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)]
    convs = list(zip([3, *chans[:-1]], chans))
    assert n_params(model) == sum(conv(i, o) for i, o in convs) + linear(128, 10)
