"""Sequential models, their summary, and checkpoints that are data, never code.

A checkpoint is one ``.npz`` file: the architecture as JSON, every parameter
and buffer as an array, and a format version. It is written to a temporary
file beside the target and renamed over it, so an interrupted save never
destroys the last good one. Reading checks the file against its own
architecture before any weight is decompressed or allocated, and never
unpickles (``gpucnn.npz``).
"""

from __future__ import annotations

import json

import numpy as np

from . import fusion
from .backend import get_backend
from .layers import LAYER_TYPES, Dense, Layer
from .npz import NpzReader, is_float_array, save_npz_atomic
from .optim import Parameter
from .random import as_generator

FORMAT_VERSION = 1


class Sequential:
    """Layers applied one after the other; backward runs them in reverse.

    ``forward(x)`` takes a NumPy or backend array (N, ...) and returns the
    backend array of the last layer; ``backward(dy)`` returns dx (``input_grad=False``:
    parameter gradients only). Layers run as ``gpucnn.fusion`` plans them.
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
        self._steps = None  # the execution plan of the last forward, which backward follows
        if layers:
            self.to(layers[0].backend)

    # --- running -------------------------------------------------------------

    def forward(self, x, training: bool = True):
        """x (N, ...) -> output of the last layer, on this model's backend.

        The layers run as ``gpucnn.fusion.plan`` groups them: a Conv2D followed
        by a ReLU runs as one convolution with a fused ReLU, with the result of
        the two layers.
        """
        x = self.backend.asarray(x, dtype=self.dtype)
        self.input_shape = tuple(x.shape[1:])
        self._steps = fusion.plan(self.layers)
        for step in self._steps:
            x = step.forward(x, training=training)
        return x

    __call__ = forward

    def backward(self, dy, input_grad: bool = True):
        """dy of the output -> dx of the input; parameter gradients accumulate in the layers.

        ``input_grad=False`` (a training step, where nothing reads dx) stops at
        the lowest layer with parameters, which computes its parameter gradients
        only (a Conv2D there skips its backward-data convolution), and returns None.
        """
        dy = self.backend.asarray(dy, dtype=self.dtype)
        steps = self._steps if self._steps is not None else fusion.plan(self.layers)
        if input_grad:
            for step in reversed(steps):
                dy = step.backward(dy)
            return dy
        lowest = next((i for i, step in enumerate(steps) if step.has_parameters), len(steps))
        for step in reversed(steps[lowest + 1:]):
            dy = step.backward(dy)
        if lowest < len(steps):
            steps[lowest].backward_parameters(dy)
        return None

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

    def state_shapes(self) -> dict:
        """``{key: shape}`` of what ``state_arrays()`` returns, without copying anything."""
        return {f"{i}.{key}": tuple(value.shape) for i, layer in enumerate(self.layers)
                for store in (layer.params, layer.buffers) for key, value in store.items()}

    def load_state_arrays(self, arrays: dict, source: str = "state") -> None:
        """Copy arrays from ``state_arrays()`` form into the layers; shapes must match exactly.

        Everything is checked (names, shapes, float32/float64) and converted
        before the first layer changes: on a ValueError the model is as it was.
        """
        check_state_arrays(arrays, self.state_shapes(), source)
        converted = {}  # (layer index, key) -> the array on the layer's backend, in its dtype
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.buffers):
                for key, current in store.items():
                    converted[i, key] = layer.backend.asarray(arrays[f"{i}.{key}"].astype(current.dtype))
        for (i, key), value in converted.items():
            layer = self.layers[i]
            (layer.params if key in layer.params else layer.buffers)[key] = value

    # --- description ------------------------------------------------------------

    def get_config(self) -> dict:
        return {"layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    def summary(self, input_shape=None) -> str:
        """A Keras-like table: layer, output shape, parameter count (returned, not printed).

        ``input_shape`` is (C, H, W) without the batch axis; by default the shape
        of the last input seen (``forward``, an explanation, or the last
        ``summary(input_shape)``, which ``models.build_model`` calls), or
        ``(in_features,)`` for a model that starts with a Dense layer. A shape
        given here is remembered once every layer has accepted it.
        """
        known = input_shape or self.input_shape or self._implied_input_shape()
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
        if known is None:
            body.append("Output shapes unknown: pass summary(input_shape=(C, H, W)) or run the model once")
        elif input_shape is not None:
            self.input_shape = tuple(input_shape)
        return "\n".join(body)

    def _implied_input_shape(self):
        """(in_features,) when the first layer is a Dense: the only input shape it takes."""
        first = self.layers[0] if self.layers else None
        return (first.in_features,) if isinstance(first, Dense) else None

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential([\n{inner}\n])"

    # --- checkpoints ------------------------------------------------------------------

    def save(self, path, extra: dict | None = None) -> None:
        """Write the architecture and weights to ``path`` (.npz) atomically.

        ``extra`` maps names to NumPy arrays saved alongside (e.g. optimizer state,
        under keys that start with ``"extra."``). The file gets the mode the
        umask gives any new file; see ``gpucnn.npz.save_npz_atomic``.
        """
        arrays = {f"weights.{k}": v for k, v in self.state_arrays().items()}
        for key, value in (extra or {}).items():
            arrays[f"extra.{key}"] = np.asarray(value)
        arrays["config"] = np.array(json.dumps(self.get_config()))
        arrays["format_version"] = np.array(FORMAT_VERSION)
        save_npz_atomic(path, arrays)


# --- reading model files -------------------------------------------------------------------


def check_state_arrays(arrays: dict, expected: dict, source: str) -> None:
    """Refuse ``arrays`` (``{key: array or ArrayHeader}``) unless their keys are those of
    ``expected`` (``{key: shape}``), each with that shape and a float32/float64 dtype.

    Works on headers as well as on arrays, so a file is checked before it is read.
    """
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source}: does not match the model (missing {missing}, unexpected {unexpected})")
    for key, shape in expected.items():
        array = arrays[key]
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{source}: array {key!r} has shape {tuple(array.shape)}, "
                             f"the model expects {tuple(shape)}")
        if not is_float_array(array):
            raise ValueError(f"{source}: array {key!r} has dtype {array.dtype}; "
                             f"weights must be float32 or float64")


def check_finite(arrays: dict, source: str, prefix: str = "") -> None:
    """Refuse any array of ``arrays`` holding NaN or infinity, naming it (``prefix`` + key)."""
    for key, array in arrays.items():
        if not np.isfinite(array).all():
            raise ValueError(f"{source}: member {prefix + key!r} holds NaN or infinite values "
                             f"(pass allow_nonfinite=True to load it anyway)")


def open_checkpoint(path, accept, max_bytes: int | None = None) -> tuple[NpzReader, dict]:
    """Open a model file for checked reading; returns the reader and the parsed architecture.

    ``accept(key)`` says which members besides ``config`` and ``format_version``
    may be present; nothing but those two small members has been read yet.
    The caller closes the reader.
    """
    npz = NpzReader(path, max_bytes)
    try:
        if not {"format_version", "config"} <= npz.keys:
            raise ValueError(f"{npz.source} is not a gpucnn model file (no format_version/config)")
        npz.check_members(lambda key: key in ("config", "format_version") or accept(key))
        version = int(npz.read_scalar("format_version", "integer"))
        if version != FORMAT_VERSION:
            raise ValueError(f"{npz.source} has format version {version}; "
                             f"this gpucnn reads version {FORMAT_VERSION}")
        try:
            config = json.loads(str(npz.read_scalar("config", "text")))
        except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: absurdly deep nesting
            raise ValueError(f"{npz.source}: unreadable architecture ({type(err).__name__}: {err})") from None
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"{npz.source}: malformed architecture (no list of layers)")
    except BaseException:
        npz.close()
        raise
    return npz, config


def _layer_class(spec, source: str):
    """The layer class a config entry names (a ValueError for unknown ones)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise ValueError(f"{source}: malformed architecture (layer entry {spec!r})")
    cls = LAYER_TYPES.get(spec.get("class"))
    if cls is None:
        raise ValueError(f"{source}: unknown layer type {spec.get('class')!r}; "
                         f"known: {', '.join(sorted(LAYER_TYPES))}")
    return cls


def state_shapes_from_config(config: dict, source: str = "config") -> dict:
    """``{key: shape}`` of the state arrays of the model ``config`` describes, allocating nothing."""
    shapes = {}
    for i, spec in enumerate(config["layers"]):
        cls = _layer_class(spec, source)
        try:
            layer_shapes = cls.state_shapes(spec["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: malformed architecture in layer {i} "
                             f"({type(err).__name__}: {err})") from None
        shapes.update({f"{i}.{key}": shape for key, shape in layer_shapes.items()})
    return shapes


def model_from_config(config: dict, source: str = "config") -> Sequential:
    """Rebuild a Sequential (freshly initialised) from ``get_config()`` output."""
    specs = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(specs, list):
        raise ValueError(f"{source}: malformed architecture (no list of layers)")
    layers = []
    for spec in specs:
        cls = _layer_class(spec, source)
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
        try:
            layers.append(cls(**args))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: malformed architecture ({type(err).__name__}: {err})") from None
    return Sequential(layers)


def load_model(path, backend="cpu", *, max_bytes: int | None = None,
               allow_nonfinite: bool = False) -> Sequential:
    """Read a model written by ``Sequential.save`` (or a trainer checkpoint); returns it on ``backend``.

    The file is checked before anything large is read or allocated: only the
    members gpucnn writes may be present, every weight's shape (from its
    header) must be the one the architecture gives, float32 or float64, and
    the arrays together may declare at most ``max_bytes`` (default
    ``$GPUCNN_MAX_MODEL_BYTES`` or 4 GiB). Weights holding NaN or infinity are
    refused unless ``allow_nonfinite``.
    Raises FileNotFoundError for a missing file and ValueError, naming the file
    and the member, for a corrupt, truncated, pickled, oversized or mismatched one.
    """
    npz, config = open_checkpoint(path, lambda key: key.startswith(("weights.", "extra.")), max_bytes)
    with npz:
        expected = state_shapes_from_config(config, source=npz.source)
        headers = {key[len("weights."):]: header for key, header in npz.headers.items()
                   if key.startswith("weights.")}
        check_state_arrays(headers, expected, npz.source)
        model = model_from_config(config, source=npz.source)
        weights = {key: npz.read(f"weights.{key}") for key in expected}
    if not allow_nonfinite:
        check_finite(weights, npz.source, prefix="weights.")
    dtypes = {v.dtype.newbyteorder("=") for v in weights.values()}
    if len(dtypes) == 1:
        model.to(dtype=dtypes.pop())
    model.load_state_arrays(weights, source=npz.source)
    return model.to(backend)
