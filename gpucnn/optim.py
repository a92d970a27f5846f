"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules.

An optimizer takes ``model.parameters()`` first, like PyTorch: a list of
``Parameter`` handles, each naming one entry of a layer's ``params``/``grads``.
``step()`` updates the values in place from the gradients; the model's
``zero_grad()`` clears the gradients between steps.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .arguments import as_float, as_int
from .npz import is_float_array

_STATE_KEY = re.compile(r"state\.(0|[1-9][0-9]*)\.(\w+)")

# The smallest eps Adam accepts: float32's smallest normal number. A smaller eps
# rounds to zero in a float32 update (or soon after, scaled by the bias
# correction), and a parameter whose gradient is exactly zero then gets 0 / 0 = NaN.
MIN_ADAM_EPS = float(np.finfo(np.float32).tiny)


class Parameter:
    """A handle on ``layer.params[key]`` and ``layer.grads[key]``."""

    def __init__(self, layer, key: str):
        self.layer, self.key = layer, key

    @property
    def value(self):
        return self.layer.params[self.key]

    @property
    def grad(self):
        return self.layer.grads[self.key]

    @property
    def xp(self):
        return self.layer.backend.xp

    def __repr__(self) -> str:
        return f"Parameter({self.layer.where}.{self.key}, shape={tuple(self.value.shape)})"


class Optimizer:
    """Base class: the parameter list, the learning rate, per-parameter state, and its (de)serialisation."""

    state_names: tuple = ()  # the per-parameter state arrays a subclass keeps (keys of self.state[i])

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not all(isinstance(p, Parameter) for p in self.params):
            raise TypeError(f"{type(self).__name__}: expected model.parameters(), "
                            f"got {type(self.params[0]).__name__} items")
        where = type(self).__name__
        self.lr = self.base_lr = as_float(lr, "lr", where, low=0.0, low_open=True)
        self.weight_decay = as_float(weight_decay, "weight_decay", where, low=0.0)
        self.steps = 0
        self.state: list[dict] = [{} for _ in self.params]

    def _buffer(self, i: int, name: str):
        """The state array ``name`` of parameter i, created as zeros on the parameter's backend."""
        state = self.state[i]
        if name not in state:
            state[name] = self.params[i].xp.zeros_like(self.params[i].value)
        return state[name]

    def step(self) -> None:
        """Apply one update to every parameter from its gradient."""
        self.steps += 1
        for i, p in enumerate(self.params):
            self._update(i, p)

    def _update(self, i: int, p: Parameter) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Learning rate, step count and every state array, as host NumPy arrays (flat keys)."""
        out = {"lr": np.float64(self.lr), "base_lr": np.float64(self.base_lr),
               "steps": np.int64(self.steps)}
        for i, state in enumerate(self.state):
            for name, arr in state.items():
                out[f"state.{i}.{name}"] = self.params[i].layer.backend.to_numpy(arr)
        return out

    def load_state_dict(self, state: dict, source: str | None = None) -> None:
        """Restore what ``state_dict`` returned (arrays move to each parameter's backend).

        Everything is checked before anything changes: a ValueError naming the
        entry (and ``source``, e.g. the file) leaves the optimizer as it was.
        """
        self.check_state_dict(state, source)
        where = self._state_where(source)
        lr, base_lr, steps = float(state["lr"]), float(state["base_lr"]), int(state["steps"])
        if not (math.isfinite(lr) and lr >= 0 and math.isfinite(base_lr) and base_lr > 0):
            raise ValueError(f"{where}: lr {lr} and base_lr {base_lr} must be finite, "
                             f"lr >= 0 and base_lr > 0")
        if steps < 0:
            raise ValueError(f"{where}: steps must be >= 0, got {steps}")
        new_state = [{} for _ in self.params]
        for key, arr in state.items():
            if key.startswith("state."):
                _, index, name = key.split(".")
                p = self.params[int(index)]
                new_state[int(index)][name] = p.layer.backend.asarray(arr.astype(p.value.dtype))
        self.lr, self.base_lr, self.steps, self.state = lr, base_lr, steps, new_state

    def check_state_dict(self, state: dict, source: str | None = None) -> None:
        """Raise a ValueError naming the entry unless ``state`` has the form ``state_dict`` gives.

        Looks at keys, shapes and dtypes only (so it also takes the headers of a
        file's arrays, before they are read): ``lr``, ``base_lr`` (floats) and
        ``steps`` (an integer), single values; ``state.INDEX.NAME`` arrays shaped
        like parameter INDEX, float32 or float64, NAME one of ``state_names``,
        and each NAME either absent or present for every parameter.
        """
        where = self._state_where(source)
        for key, kinds in (("lr", "f"), ("base_lr", "f"), ("steps", "iu")):
            if key not in state:
                raise ValueError(f"{where}: {key!r} is missing")
            value = _as_array_like(state[key])
            if tuple(value.shape) != () or value.dtype.kind not in kinds:
                raise ValueError(f"{where}: {key!r} must be a single {'float' if kinds == 'f' else 'integer'}, "
                                 f"got {value.dtype} of shape {tuple(value.shape)}")
        names = set()
        for key, arr in state.items():
            if key in ("lr", "base_lr", "steps"):
                continue
            arr = _as_array_like(arr)
            match = _STATE_KEY.fullmatch(key)
            if match is None or int(match[1]) >= len(self.params) or match[2] not in self.state_names:
                raise ValueError(f"{where}: unexpected entry {key!r} ({type(self).__name__} keeps "
                                 f"state.INDEX.NAME, INDEX < {len(self.params)}, NAME in {self.state_names})")
            expected = tuple(self.params[int(match[1])].value.shape)
            if tuple(arr.shape) != expected:
                raise ValueError(f"{where}: {key!r} of shape {tuple(arr.shape)} does not match the "
                                 f"model's parameter of shape {expected}")
            if not is_float_array(arr):
                raise ValueError(f"{where}: {key!r} has dtype {arr.dtype}; it must be float32 or float64")
            names.add(match[2])
        missing = [f"state.{i}.{name}" for name in sorted(names) for i in range(len(self.params))
                   if f"state.{i}.{name}" not in state]
        if missing:
            raise ValueError(f"{where}: {missing[0]!r} is missing ({len(missing)} state arrays in all)")

    def _state_where(self, source) -> str:
        return f"{source}: optimizer state" if source else f"{type(self).__name__}.load_state_dict"


def _as_array_like(value):
    """Arrays and array headers as they are; Python numbers as NumPy arrays (for .shape and .dtype)."""
    return value if hasattr(value, "dtype") else np.asarray(value)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    g = grad + wd * w;  v = momentum * v + g;
    w -= lr * (g + momentum * v) with Nesterov, else w -= lr * v (PyTorch's formulation).
    """

    state_names = ("velocity",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        # momentum >= 1 never forgets a gradient: the velocity grows without bound.
        self.momentum = as_float(momentum, "momentum", "SGD", low=0.0, high=1.0, high_open=True)
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)

    def _update(self, i, p):
        g = p.grad + self.weight_decay * p.value if self.weight_decay else p.grad
        if self.momentum:
            v = self._buffer(i, "velocity")
            v *= self.momentum
            v += g
            g = g + self.momentum * v if self.nesterov else v
        p.value[...] -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds wd * w to the gradient (L2)."""

    decoupled = False
    state_names = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        where = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(as_float(b, name, where, low=0.0, high=1.0, high_open=True)
                           for name, b in zip(("betas[0]", "betas[1]"), betas))
        self.eps = as_float(eps, "eps", where, low=MIN_ADAM_EPS)

    def _update(self, i, p):
        b1, b2 = self.betas
        g = p.grad
        if self.weight_decay and not self.decoupled:
            g = g + self.weight_decay * p.value
        m, v = self._buffer(i, "m"), self._buffer(i, "v")
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        step_size = self.lr * math.sqrt(1 - b2 ** self.steps) / (1 - b1 ** self.steps)
        if self.weight_decay and self.decoupled:
            p.value[...] *= 1 - self.lr * self.weight_decay
        # eps is added to sqrt(v_hat), written here on the uncorrected v
        p.value[...] -= step_size * m / (p.xp.sqrt(v) + self.eps * math.sqrt(1 - b2 ** self.steps))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): w *= 1 - lr * wd before the Adam step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


# --- learning-rate schedules ----------------------------------------------------
# A schedule is a small callable: schedule(epoch, base_lr) -> lr for that epoch
# (epochs counted from 0). The LearningRateScheduler callback applies one to an
# optimizer at the start of every epoch; anything else may call it too.


class StepLR:
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = as_int(step_size, "step_size", "StepLR", minimum=1)
        self.gamma = as_float(gamma, "gamma", "StepLR", low=0.0, low_open=True)

    def __call__(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)

    def __repr__(self):
        return f"StepLR(step_size={self.step_size}, gamma={self.gamma})"


class CosineLR:
    """Cosine annealing from base_lr to min_lr over ``total_epochs``, then min_lr."""

    def __init__(self, total_epochs: int, min_lr: float = 0.0):
        self.total_epochs = as_int(total_epochs, "total_epochs", "CosineLR", minimum=1)
        self.min_lr = as_float(min_lr, "min_lr", "CosineLR", low=0.0)

    def __call__(self, epoch: int, base_lr: float) -> float:
        t = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * t))

    def __repr__(self):
        return f"CosineLR(total_epochs={self.total_epochs}, min_lr={self.min_lr})"
