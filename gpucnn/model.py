"""Sequential models, their summary, and checkpoints that are data, never code.

A checkpoint is one ``.npz`` file: the architecture as JSON, every parameter
and buffer as an array, and a format version. It is written to a temporary
file beside the target and renamed over it, so an interrupted save never
destroys the last good one; it is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from .backend import get_backend
from .layers import LAYER_TYPES, Layer
from .optim import Parameter
from .random import as_generator

FORMAT_VERSION = 1


class Sequential:
    """Layers applied one after the other; backward runs them in reverse.

    ``forward(x)`` takes a NumPy or backend array (N, ...) and returns the
    backend array of the last layer; ``backward(dy)`` returns dx.
    """

    def __init__(self, layers):
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a gpucnn layer")
        self.layers = layers
        for i, layer in enumerate(layers):
            layer.name = f"layer {i} {layer!r}"
        self.backend = get_backend("cpu")
        self.input_shape = None  # (C, H, W) of the last input seen, for summary()
        if layers:
            self.to(layers[0].backend)

    # --- running -------------------------------------------------------------

    def forward(self, x, training: bool = True):
        """x (N, ...) -> output of the last layer, on this model's backend."""
        x = self.backend.asarray(x, dtype=self.dtype)
        self.input_shape = tuple(x.shape[1:])
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    __call__ = forward

    def backward(self, dy):
        """dy of the output -> dx of the input; parameter gradients accumulate in the layers."""
        dy = self.backend.asarray(dy, dtype=self.dtype)
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    # --- parameters and placement ------------------------------------------------

    def to(self, backend=None, dtype=None):
        """Move every layer to ``backend`` (and ``dtype``); returns self."""
        if backend is not None:
            self.backend = get_backend(backend)
        for layer in self.layers:
            layer.to(self.backend, dtype)
        return self

    @property
    def dtype(self):
        """The floating dtype of the parameters (float32 unless moved with ``to(dtype=...)``)."""
        for layer in self.layers:
            for value in layer.params.values():
                return np.dtype(value.dtype)
        return np.dtype(np.float32)

    def parameters(self) -> list[Parameter]:
        """One handle per trainable array, in layer order (what optimizers take)."""
        return [Parameter(layer, key) for layer in self.layers for key in layer.params]

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def reset_parameters(self, rng=None) -> None:
        """Re-draw every layer's weights from one Generator (a seed, a Generator or None)."""
        rng = as_generator(rng)
        for layer in self.layers:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters(rng)

    def state_arrays(self) -> dict:
        """A snapshot of every parameter and buffer as host NumPy arrays, keyed ``"{index}.{name}"``.

        The arrays are copies (like Keras' ``get_weights``), also on the cpu
        backend, so training on does not change a snapshot taken earlier.
        """
        out = {}
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.buffers):
                for key, value in store.items():
                    out[f"{i}.{key}"] = np.array(layer.backend.to_numpy(value), copy=True)
        return out

    def load_state_arrays(self, arrays: dict, source: str = "state") -> None:
        """Copy arrays from ``state_arrays()`` form into the layers; shapes must match exactly."""
        expected = self.state_arrays()
        missing = sorted(set(expected) - set(arrays))
        unexpected = sorted(set(arrays) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source}: does not match the model (missing {missing}, unexpected {unexpected})")
        for key, current in expected.items():
            if arrays[key].shape != current.shape:
                raise ValueError(f"{source}: array {key!r} has shape {arrays[key].shape}, "
                                 f"the model expects {current.shape}")
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.buffers):
                for key in store:
                    store[key] = layer.backend.asarray(arrays[f"{i}.{key}"].astype(store[key].dtype))

    # --- description ------------------------------------------------------------

    def get_config(self) -> dict:
        return {"layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    def summary(self, input_shape=None) -> str:
        """A Keras-like table: layer, output shape, parameter count (returned, not printed).

        ``input_shape`` is (C, H, W) without the batch axis; by default the shape
        of the last input seen.
        """
        known = input_shape or self.input_shape
        shape = None if known is None else (1,) + tuple(known)  # batch of one stands for N
        rows = [("Layer", "Output shape", "Params")]
        total = 0
        for i, layer in enumerate(self.layers):
            count = sum(int(np.prod(v.shape)) for v in layer.params.values())
            total += count
            if shape is not None:
                shape = layer.output_shape(shape)
                shown = "(" + ", ".join(["N"] + [str(d) for d in shape[1:]]) + ")"
            else:
                shown = "?"
            rows.append((f"{i}: {layer!r}", shown, f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        line = "-" * (sum(widths) + 4)
        fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"  # noqa: E731
        body = [fmt(rows[0]), line] + [fmt(r) for r in rows[1:]] + [line, f"Total parameters: {total:,}"]
        return "\n".join(body)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential([\n{inner}\n])"

    # --- checkpoints ------------------------------------------------------------------

    def save(self, path, extra: dict | None = None) -> None:
        """Write the architecture and weights to ``path`` (.npz) atomically.

        ``extra`` maps names to NumPy arrays saved alongside (e.g. optimizer state,
        under keys that start with ``"extra."``).
        """
        arrays = {f"weights.{k}": v for k, v in self.state_arrays().items()}
        for key, value in (extra or {}).items():
            arrays[f"extra.{key}"] = np.asarray(value)
        arrays["config"] = np.array(json.dumps(self.get_config()))
        arrays["format_version"] = np.array(FORMAT_VERSION)
        save_npz_atomic(path, arrays)


def save_npz_atomic(path, arrays: dict) -> None:
    """np.savez to a temporary file in the target's folder, then rename it over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint(path) -> dict:
    """All arrays of a checkpoint as a dict, with clear errors for missing, corrupt or unsafe files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as err:  # numpy refuses object arrays without pickle
        if "allow_pickle" in str(err):
            raise ValueError(f"checkpoint {path!r} carries pickled objects; refusing to load it "
                             f"(a checkpoint is data, never code)") from None
        raise ValueError(f"checkpoint {path!r} is corrupt: {err}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as err:
        raise ValueError(f"checkpoint {path!r} is corrupt or truncated ({type(err).__name__}: {err})") from None
    if "format_version" not in arrays or "config" not in arrays:
        raise ValueError(f"checkpoint {path!r} is not a gpucnn model file (no format_version/config)")
    version = int(arrays["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path!r} has format version {version}; "
                         f"this gpucnn reads version {FORMAT_VERSION}")
    return arrays


def model_from_config(config: dict, source: str = "config") -> Sequential:
    """Rebuild a Sequential (freshly initialised) from ``get_config()`` output."""
    try:
        specs = config["layers"]
        layers = []
        for spec in specs:
            cls = LAYER_TYPES.get(spec["class"])
            if cls is None:
                raise ValueError(f"{source}: unknown layer type {spec['class']!r}; "
                                 f"known: {', '.join(sorted(LAYER_TYPES))}")
            args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
            layers.append(cls(**args))
    except (KeyError, TypeError) as err:
        raise ValueError(f"{source}: malformed architecture ({type(err).__name__}: {err})") from None
    return Sequential(layers)


def load_model(path, backend="cpu") -> Sequential:
    """Read a model written by ``Sequential.save``; returns it on ``backend``.

    Raises FileNotFoundError for a missing file and ValueError for a corrupt,
    truncated, pickled or mismatched one.
    """
    arrays = read_checkpoint(path)
    try:
        config = json.loads(str(arrays["config"]))
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {os.fspath(path)!r}: unreadable architecture ({err})") from None
    model = model_from_config(config, source=f"checkpoint {os.fspath(path)!r}")
    weights = {k[len("weights."):]: v for k, v in arrays.items() if k.startswith("weights.")}
    dtypes = {v.dtype for v in weights.values()}
    if len(dtypes) == 1:
        model.to(dtype=dtypes.pop())
    model.load_state_arrays(weights, source=f"checkpoint {os.fspath(path)!r}")
    return model.to(backend)
