"""End-to-end training throughput: one training step of a zoo model, ours against PyTorch.

A step is what ``Trainer`` does per batch: zero the gradients, forward,
softmax cross-entropy (its value read back to the host), backward, and an
Adam update. The PyTorch side builds the *same* architecture from the
model's saved configuration (``Sequential.get_config``: layer classes and
constructor arguments), with the same batch, loss and optimizer settings, and
runs the idiomatic PyTorch step in the reference process.

Records report images/s (``batch / median step time``) and the step's
GFLOP/s, counting every convolution and dense layer three times (forward,
backward-data, backward-filter).
"""

from __future__ import annotations

import numpy as np

# The end-to-end cases: zoo name -> image shape and classes the model is built for.
MODELS = {
    "small": {"title": "digit CNN", "in_channels": 1, "image_size": 28, "num_classes": 10},
    "jet": {"title": "jet CNN", "in_channels": 1, "image_size": 40, "num_classes": 2},
}
BATCH = 128
QUICK_BATCH = 32
ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}


def training_spec(name: str, batch: int, seed: int = 0) -> dict:
    """Everything both sides need to build and train model ``name`` on one batch (JSON-serialisable)."""
    from ..models import build_model

    if name not in MODELS:
        raise ValueError(f"bench: unknown end-to-end model {name!r}; known: {', '.join(MODELS)}")
    m = MODELS[name]
    model = build_model(name, m["in_channels"], m["num_classes"], m["image_size"], rng=seed)
    return {"model": name, "title": m["title"], "batch": int(batch), "seed": seed,
            "input_shape": [m["in_channels"], m["image_size"], m["image_size"]],
            "num_classes": m["num_classes"], "layers": model.get_config()["layers"],
            "adam": {"lr": ADAM["lr"], "betas": list(ADAM["betas"]), "eps": ADAM["eps"]}}


def _batch(spec: dict):
    """Host inputs (N, C, H, W) float32 and integer labels (N,) of one training batch."""
    rng = np.random.default_rng(spec["seed"])
    x = rng.standard_normal([spec["batch"]] + spec["input_shape"], dtype=np.float32)
    y = rng.integers(0, spec["num_classes"], spec["batch"])
    return x, y


def training_flops(spec: dict) -> int:
    """FLOPs of one training step: 3x the forward multiply-adds x 2 of every conv and dense layer."""
    from ..layers import Conv2D, Dense
    from ..model import model_from_config

    model = model_from_config({"layers": spec["layers"]}, source="bench spec")
    shape = (spec["batch"], *spec["input_shape"])
    total = 0
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            total += 3 * layer.geometry(shape).flops
        elif isinstance(layer, Dense):
            total += 3 * 2 * shape[0] * layer.in_features * layer.out_features
        shape = layer.output_shape(shape)
    return total


def gpucnn_training_step(backend, spec: dict):
    """A zero-argument callable running one training step of our model on ``backend``."""
    from ..losses import SoftmaxCrossEntropy
    from ..models import build_model
    from ..optim import Adam

    m = MODELS[spec["model"]]
    model = build_model(spec["model"], m["in_channels"], m["num_classes"], m["image_size"],
                        rng=spec["seed"]).to(backend)
    loss = SoftmaxCrossEntropy().to(backend)
    adam = spec["adam"]
    optimizer = Adam(model.parameters(), lr=adam["lr"], betas=tuple(adam["betas"]), eps=adam["eps"])
    x, y = _batch(spec)

    def step():
        model.zero_grad()
        out = model.forward(x, training=True)
        loss.forward(out, y)
        model.backward(loss.backward(), input_grad=False)
        optimizer.step()

    return step


def torch_model(layers: list, torch):
    """The ``torch.nn.Sequential`` of a gpucnn layer configuration (``Sequential.get_config()["layers"]``)."""
    nn = torch.nn
    modules = []
    for entry in layers:
        cls, c = entry["class"], entry["config"]
        if cls == "Conv2D":
            modules.append(nn.Conv2d(c["in_channels"], c["out_channels"], tuple(c["kernel_size"]),
                                     tuple(c["stride"]), tuple(c["padding"]), tuple(c["dilation"]),
                                     bias=c["bias"]))
        elif cls == "Dense":
            modules.append(nn.Linear(c["in_features"], c["out_features"], bias=c["bias"]))
        elif cls == "MaxPool2D":
            modules.append(nn.MaxPool2d(tuple(c["kernel_size"]), tuple(c["stride"]), tuple(c["padding"])))
        elif cls == "AvgPool2D":
            modules.append(nn.AvgPool2d(tuple(c["kernel_size"]), tuple(c["stride"]), tuple(c["padding"])))
        elif cls == "GlobalAvgPool2D":
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif cls == "Flatten":
            modules.append(nn.Flatten())
        elif cls == "ReLU":
            modules.append(nn.ReLU())
        elif cls == "LeakyReLU":
            modules.append(nn.LeakyReLU(c["negative_slope"]))
        elif cls == "Sigmoid":
            modules.append(nn.Sigmoid())
        elif cls == "Tanh":
            modules.append(nn.Tanh())
        elif cls == "Dropout":
            modules.append(nn.Dropout(c["p"]))
        elif cls == "BatchNorm2D":
            modules.append(nn.BatchNorm2d(c["num_features"], eps=c["eps"], momentum=c["momentum"]))
        else:
            raise ValueError(f"bench: no PyTorch equivalent known for layer {cls}")
    return nn.Sequential(*modules)


def torch_training_step(kernels, spec: dict):
    """(callable running one PyTorch training step of ``spec``, a description) on ``kernels.device``.

    ``kernels`` is the reference worker's ``TorchKernels``; the NumPy baseline
    has no training step, and says so.
    """
    torch = getattr(kernels, "torch", None)
    if torch is None:
        raise RuntimeError("end-to-end training needs PyTorch as the reference")
    device = kernels.device
    torch.manual_seed(spec["seed"])
    model = torch_model(spec["layers"], torch).to(device).train()
    criterion = torch.nn.CrossEntropyLoss()
    adam = spec["adam"]
    optimizer = torch.optim.Adam(model.parameters(), lr=adam["lr"], betas=tuple(adam["betas"]), eps=adam["eps"])
    x_host, y_host = _batch(spec)
    x_host, y_host = torch.from_numpy(x_host), torch.from_numpy(y_host)

    def step():
        with torch.enable_grad():
            optimizer.zero_grad()
            out = model(x_host.to(device))
            loss = criterion(out, y_host.to(device))
            loss.backward()
            optimizer.step()
            loss.item()

    return step, "torch.nn.Sequential + torch.optim.Adam"
