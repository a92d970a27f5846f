"""Jet images: boosted top-quark jets against QCD jets, generated with Pythia 8 and FastJet.

``generate(n_per_class)`` simulates pp collisions at 13 TeV on every core,
clusters the visible final-state particles into anti-kT R = 0.8 jets, keeps
the leading jet in a pT and |eta| window (top jets truth-matched: the top and
its three decay quarks within dR < R of the jet axis, as in Kasieczka et al.,
arXiv:1902.09914) and turns it into an image:

- centred on the pT-weighted centroid (delta-phi wrapped into [-pi, pi]),
  rotated so the principal axis of the pT distribution is vertical, flipped so
  the harder half lies right and up, pixelated ``size x size`` over
  +-``extent`` in (eta, phi);
- 1 channel: total pT; 3 channels: charged pT, neutral pT, charged
  multiplicity (Komiske, Metodiev, Schwartz, arXiv:1612.01551);
- the pT channels of each image sum to 1; ``standardize`` then centres and
  scales every pixel with statistics of the training split only.

The work is cut into blocks of ``chunk`` jets, each with its own Pythia seed
drawn from ``seed``, so the events do not depend on how many workers run them.
Every block goes straight into a compressed ``.npz`` (the cache file), so the
memory of a run does not grow with its size. ``load_jets`` turns the public
top-tagging data set's four-vectors into the same images.

Pythia and FastJet come with the optional extra: ``pip install "gpucnn[physics]"``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import zipfile

import numpy as np

from ..npz import create_new_file

PROCESSES = ("top", "qcd")
LABELS = {"top": 1, "qcd": 0}
INFO_KEYS = ("pt", "eta", "phi", "mass", "n_constituents")
CHANNEL_NAMES = {1: ("pT",), 3: ("charged pT", "neutral pT", "charged multiplicity")}
PT_HAT_MARGIN = 50.0  # GeV: the pT-hat window is this much wider than the jet window on each side
MAX_SEED = 900_000_000  # Pythia's Random:seed accepts 1..900000000
INSTALL_HINT = 'pip install "gpucnn[physics]"'


def _physics_modules():
    """``(pythia8mc, fastjet)``, or an ImportError that says how to install them."""
    try:
        import fastjet
        import pythia8mc
    except ImportError as err:
        raise ImportError(f"jet generation needs Pythia 8 and FastJet ({err}); "
                          f"install them with: {INSTALL_HINT}") from None
    return pythia8mc, fastjet


def physics_versions() -> dict:
    """Versions of the packages that make the events: ``{"pythia8mc": ..., "fastjet": ..., "numpy": ...}``."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("pythia8mc", "fastjet", "numpy"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


# --- images -------------------------------------------------------------------------------------

def wrap_phi(dphi):
    """Angles wrapped into [-pi, pi) (elementwise)."""
    return (np.asarray(dphi, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi


def _check_image_settings(size, extent, channels, where: str) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{where}: size must be a positive int, got {size!r}")
    if not float(extent) > 0:
        raise ValueError(f"{where}: extent must be positive, got {extent!r}")
    if channels not in CHANNEL_NAMES:
        raise ValueError(f"{where}: channels must be 1 or 3, got {channels!r}")


def jet_image(pt, eta, phi, charged=None, size: int = 40, extent: float = 0.8, channels: int = 1) -> np.ndarray:
    """One preprocessed jet image, float32 (channels, size, size), from its constituents.

    pt, eta, phi: (n,) constituent transverse momenta and directions; charged:
    (n,) bools, needed for ``channels=3`` (charged pT, neutral pT, charged
    multiplicity), else ignored. Row 0 is the top (+phi') of the image, column
    0 its left (-eta'). The pT channels sum to 1 (pixels outside +-extent are
    dropped before normalising).
    """
    _check_image_settings(size, extent, channels, "jet_image")
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    if pt.ndim != 1 or eta.shape != pt.shape or phi.shape != pt.shape:
        raise ValueError(f"jet_image: pt, eta, phi must be 1-D of one length, got shapes "
                         f"{pt.shape}, {eta.shape}, {phi.shape}")
    if channels == 3:
        if charged is None:
            raise ValueError("jet_image: channels=3 needs the charged flags of the constituents")
        charged = np.asarray(charged, dtype=bool)
        if charged.shape != pt.shape:
            raise ValueError(f"jet_image: charged has shape {charged.shape}, pt {pt.shape}")
    image = np.zeros((channels, size, size), dtype=np.float64)
    if pt.size == 0 or pt.sum() <= 0:
        return image.astype(np.float32)

    # Centre: phi relative to the hardest constituent first, so the centroid of a jet
    # that straddles phi = +-pi is not averaged across the cut.
    weights = pt / pt.sum()
    x = eta
    y = wrap_phi(phi - phi[np.argmax(pt)])
    x = x - weights @ x
    y = y - weights @ y
    # Rotate the principal axis (the leading eigenvector of the pT-weighted
    # covariance) onto the vertical.
    cov = np.array([[weights @ (x * x), weights @ (x * y)], [weights @ (x * y), weights @ (y * y)]])
    values, vectors = np.linalg.eigh(cov)
    if values[1] > values[0]:  # a degenerate jet (one constituent, a circle) keeps its orientation
        vx, vy = vectors[:, 1]
        angle = np.pi / 2 - np.arctan2(vy, vx)
        cos, sin = np.cos(angle), np.sin(angle)
        x, y = cos * x - sin * y, sin * x + cos * y
    # Flip so the harder half lies at +x and at +y.
    if pt[x < 0].sum() > pt[x > 0].sum():
        x = -x
    if pt[y < 0].sum() > pt[y > 0].sum():
        y = -y

    col = np.floor((x + extent) / (2 * extent) * size).astype(np.int64)
    row = np.floor((extent - y) / (2 * extent) * size).astype(np.int64)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    row, col, pt_in = row[inside], col[inside], pt[inside]
    if channels == 1:
        np.add.at(image[0], (row, col), pt_in)
    else:
        charged_in = charged[inside]
        np.add.at(image[0], (row[charged_in], col[charged_in]), pt_in[charged_in])
        np.add.at(image[1], (row[~charged_in], col[~charged_in]), pt_in[~charged_in])
        np.add.at(image[2], (row[charged_in], col[charged_in]), 1.0)
    pt_channels = slice(0, 1) if channels == 1 else slice(0, 2)
    total = image[pt_channels].sum()
    if total > 0:
        image[pt_channels] /= total
    return image.astype(np.float32)


def standardize(x_train, *others, regulator: float = 0.05):
    """Per-pixel standardisation with the statistics of the training split only.

    x_train: (N, C, H, W); others: arrays of shape (M, C, H, W). Returns the
    list ``[x_train', *others']`` of float32 arrays ``(x - mean) / (std + r)``,
    mean and std over x_train's images per channel and pixel, and r =
    ``regulator`` times the largest pixel std of the channel: pixels that
    are (almost) never hit in training would otherwise turn one stray
    particle of a test jet into a value of hundreds.
    """
    x_train = np.asarray(x_train)
    if x_train.ndim != 4:
        raise ValueError(f"standardize: x_train must be (N, C, H, W), got shape {x_train.shape}")
    if not float(regulator) > 0:
        raise ValueError(f"standardize: regulator must be positive, got {regulator!r}")
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    scale = std + float(regulator) * std.max(axis=(1, 2), keepdims=True)
    scale[scale == 0] = 1.0  # a channel that is zero everywhere stays zero
    out = []
    for i, x in enumerate((x_train,) + others):
        x = np.asarray(x)
        if x.shape[1:] != x_train.shape[1:]:
            raise ValueError(f"standardize: array {i} has images of shape {x.shape[1:]}, "
                             f"the training split {x_train.shape[1:]}")
        out.append(((x - mean) / scale).astype(np.float32))
    return out


def train_test_split(n: int, labels, test_fraction: float = 0.2, seed: int = 0):
    """Indices ``(train, test)`` of a stratified shuffle split of n samples (both sorted at random)."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"train_test_split: labels must have shape ({n},), got {labels.shape}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"train_test_split: test_fraction must lie in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == value))
        n_test = int(round(len(idx) * float(test_fraction)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


# --- one block of events (runs in a worker process) ---------------------------------------------

def _pythia_settings(process: str, settings: dict, seed: int) -> list[str]:
    low, high = settings["pt_range"]
    common = ["Beams:eCM = 13000.", f"PhaseSpace:pTHatMin = {max(low - PT_HAT_MARGIN, 0.0)}",
              f"PhaseSpace:pTHatMax = {high + PT_HAT_MARGIN}",
              f"PartonLevel:MPI = {'on' if settings['mpi'] else 'off'}",
              "Print:quiet = on", "Next:numberCount = 0",
              # Without setSeed every process starts from Pythia's default seed: the same events.
              "Random:setSeed = on", f"Random:seed = {seed}"]
    if process == "top":
        # Both W bosons decay to quarks: the all-hadronic top pair.
        return common + ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off", "24:onIfAny = 1 2 3 4 5"]
    return common + ["HardQCD:all = on"]


def _top_decay_directions(event) -> list[np.ndarray]:
    """For each top quark of the hard process: (4, 2) (eta, phi) of the top and its three decay quarks."""
    tops = []
    for i in (5, 6):  # the outgoing partons of the 2 -> 2 hard process
        if event[i].idAbs() != 6:
            continue
        top = event[event[i].iBotCopyId()]
        quarks = []
        for d in top.daughterList():
            daughter = event[d]
            if daughter.idAbs() == 24:
                w = event[daughter.iBotCopyId()]
                quarks += [event[q] for q in w.daughterList() if event[q].isQuark()]
            elif daughter.isQuark():
                quarks.append(daughter)
        if len(quarks) == 3:
            tops.append(np.array([[p.eta(), p.phi()] for p in [top] + quarks]))
    return tops


def _truth_matched(tops, jet_eta: float, jet_phi: float, radius: float) -> bool:
    for directions in tops:
        dr2 = (directions[:, 0] - jet_eta) ** 2 + wrap_phi(directions[:, 1] - jet_phi) ** 2
        if np.all(dr2 < radius ** 2):
            return True
    return False


_progress_counter = None


def _worker_init(counter) -> None:
    """Pool initializer: share the progress counter; send the banners and Pythia's notes to /dev/null."""
    global _progress_counter
    _progress_counter = counter
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # C++ writes to file descriptor 1 directly; sys.stdout alone would not catch it
    os.close(devnull)


def _generate_block(task):
    """Generate ``task["n"]`` accepted jets of one process with one seed; returns a dict of arrays."""
    pythia8mc, fastjet = _physics_modules()
    settings, process = task["settings"], task["process"]
    size, extent, channels, radius = settings["size"], settings["extent"], settings["channels"], settings["radius"]
    low, high = settings["pt_range"]
    pythia = pythia8mc.Pythia("", False)
    for line in _pythia_settings(process, settings, task["seed"]):
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise for process {process!r}")
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, radius)

    n = task["n"]
    images = np.zeros((n, channels, size, size), dtype=np.float32)
    info = {key: np.zeros(n, dtype=np.int64 if key == "n_constituents" else np.float64) for key in INFO_KEYS}
    accepted = tried = failed = 0
    while accepted < n:
        if not pythia.next():
            failed += 1
            if failed > 100 + tried // 10:
                raise RuntimeError(f"Pythia failed {failed} times in {tried} events ({process})")
            continue
        tried += 1
        event = pythia.event
        particles = []
        for p in event:
            if p.isFinal() and p.isVisible():
                pj = fastjet.PseudoJet(p.px(), p.py(), p.pz(), p.e())
                pj.set_user_index(1 if p.isCharged() else 0)
                particles.append(pj)
        sequence = fastjet.ClusterSequence(particles, definition)
        jets = sequence.inclusive_jets(0.5 * low)
        if not jets:
            continue
        jet = max(jets, key=lambda j: j.pt())  # the leading jet, sorted here rather than trusted
        if not (low <= jet.pt() <= high and abs(jet.eta()) < settings["eta_max"]):
            continue
        if process == "top" and not _truth_matched(_top_decay_directions(event), jet.eta(),
                                                   jet.phi_std(), radius):
            continue
        constituents = jet.constituents()
        pt = np.array([c.pt() for c in constituents])
        eta = np.array([c.eta() for c in constituents])
        phi = np.array([c.phi_std() for c in constituents])
        charged = np.array([c.user_index() == 1 for c in constituents])
        images[accepted] = jet_image(pt, eta, phi, charged, size=size, extent=extent, channels=channels)
        for key, value in zip(INFO_KEYS, (jet.pt(), jet.eta(), jet.phi_std(), jet.m(), len(constituents))):
            info[key][accepted] = value
        accepted += 1
        if _progress_counter is not None:
            with _progress_counter.get_lock():
                _progress_counter.value += 1
    return {"images": images, "info": info, "tried": tried, "process": process}


# --- the whole run ------------------------------------------------------------------------------

def _block_seed(seed: int, process_index: int, block: int) -> int:
    # One independent stream per (process, block): the same events whatever the number of workers.
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(process_index, block)).generate_state(1)[0]
    return int(state) % MAX_SEED + 1


def _settings(n_per_class, processes, pt_range, eta_max, radius, size, extent, channels, mpi, seed, chunk):
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"generate: n_per_class must be a positive int, got {n_per_class!r}")
    processes = tuple(processes)
    unknown = [p for p in processes if p not in PROCESSES]
    if unknown or not processes or len(set(processes)) != len(processes):
        raise ValueError(f"generate: processes must be distinct names from {PROCESSES}, got {processes!r}")
    low, high = (float(v) for v in pt_range)
    if not 0 < low < high:
        raise ValueError(f"generate: pt_range must be (low, high) with 0 < low < high, got {pt_range!r}")
    if not float(eta_max) > 0 or not float(radius) > 0:
        raise ValueError(f"generate: eta_max and radius must be positive, got {eta_max!r}, {radius!r}")
    _check_image_settings(size, extent, channels, "generate")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"generate: chunk must be a positive int, got {chunk!r}")
    return {"n_per_class": int(n_per_class), "processes": list(processes), "pt_range": [low, high],
            "eta_max": float(eta_max), "radius": float(radius), "size": int(size), "extent": float(extent),
            "channels": int(channels), "mpi": bool(mpi), "seed": int(seed), "chunk": int(chunk),
            "sqrt_s": 13000.0, "pt_hat_margin": PT_HAT_MARGIN}


def _tasks(settings: dict) -> list[dict]:
    """The blocks of the run in file order: block 0 of every process, then block 1, ..."""
    n, chunk = settings["n_per_class"], settings["chunk"]
    tasks = []
    for block in range((n + chunk - 1) // chunk):
        for index, process in enumerate(settings["processes"]):
            tasks.append({"settings": settings, "process": process, "block": block,
                          "n": min(chunk, n - block * chunk), "seed": _block_seed(settings["seed"], index, block)})
    return tasks


def _write_array(archive: zipfile.ZipFile, name: str, array) -> None:
    with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def _cache_key(stored: dict) -> dict:
    return {k: stored[k] for k in ("settings", "seeds", "versions")}


def read_cache_header(path) -> dict | None:
    """The settings, seeds, versions and statistics stored in a jets ``.npz``, or None if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["header"])) if "header" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def generate_to_file(path, n_per_class: int, processes=PROCESSES, pt_range=(550, 650), eta_max: float = 2.0,
                     radius: float = 0.8, size: int = 40, extent: float = 0.8, channels: int = 3,
                     mpi: bool = False, seed: int = 0, workers: int | None = None, chunk: int = 500,
                     progress: bool = True) -> dict:
    """Generate the jets of ``generate`` straight into the compressed ``.npz`` at ``path``.

    Blocks of ``chunk`` jets stream into the file as they are made, so the
    memory does not grow with ``n_per_class``. Returns the file's header: the
    settings, the Pythia seeds, the package versions and the statistics
    (events tried per process, seconds, jets per second). See ``generate``.
    """
    settings = _settings(n_per_class, processes, pt_range, eta_max, radius, size, extent, channels, mpi, seed, chunk)
    _physics_modules()
    tasks = _tasks(settings)
    workers = max(1, min(len(tasks), workers or len(os.sched_getaffinity(0))))
    total = settings["n_per_class"] * len(settings["processes"])
    shape = (total, channels, size, size)
    labels = np.zeros(total, dtype=np.int64)
    blocks = np.zeros(total, dtype=np.int64)
    info = {key: np.zeros(total, dtype=np.int64 if key == "n_constituents" else np.float64) for key in INFO_KEYS}
    tried = {p: 0 for p in settings["processes"]}

    import multiprocessing as mp

    from tqdm import tqdm

    # fork where there is one: user scripts then need no `if __name__ == "__main__"` guard. The
    # workers run only Pythia, FastJet and small NumPy arrays, nothing that a fork could leave locked.
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    counter = context.Value("q", 0)
    start = time.perf_counter()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Hidden until renamed, with the mode the umask gives a new file.
    fd, partial = create_new_file(directory, ".jets-", ".npz.partial")
    os.close(fd)
    bar = tqdm(total=total, unit="jet", desc=f"generating jets ({workers} workers)", disable=not progress,
               mininterval=0.5 if os.isatty(2) else 30.0)  # a log file gets a line every 30 s, not a stream
    done = threading.Event()

    def follow_counter():
        while not done.wait(0.5):
            bar.update(counter.value - bar.n)

    follower = threading.Thread(target=follow_counter, daemon=True)
    follower.start()
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive, \
                context.Pool(workers, initializer=_worker_init, initargs=(counter,)) as pool:
            with archive.open("images.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                                         "fortran_order": False, "shape": shape})
                offset = 0
                for task, result in zip(tasks, pool.imap(_generate_block, tasks)):
                    n = task["n"]
                    f.write(np.ascontiguousarray(result["images"], dtype="<f4").tobytes())
                    labels[offset:offset + n] = LABELS[task["process"]]
                    blocks[offset:offset + n] = task["block"]
                    for key in INFO_KEYS:
                        info[key][offset:offset + n] = result["info"][key]
                    tried[task["process"]] += result["tried"]
                    offset += n
            seconds = time.perf_counter() - start
            header = {"settings": settings, "seeds": [t["seed"] for t in tasks], "versions": physics_versions(),
                      "stats": {"seconds": round(seconds, 2), "workers": workers, "jets_per_second":
                                round(total / seconds, 2), "events_tried": tried,
                                "pass_fraction": {p: settings["n_per_class"] / tried[p] for p in tried}}}
            _write_array(archive, "labels", labels)
            _write_array(archive, "block", blocks)
            for key in INFO_KEYS:
                _write_array(archive, key, info[key])
            _write_array(archive, "header", np.array(json.dumps(header)))
        os.replace(partial, path)  # an interrupted run never leaves a file that looks complete
    finally:
        done.set()
        follower.join()
        bar.update(counter.value - bar.n)
        bar.close()
        if os.path.exists(partial):
            os.remove(partial)
    return header


def load_cache(path):
    """``(images, labels, info)`` from a file written by ``generate_to_file`` (see ``generate``)."""
    header = read_cache_header(path)
    if header is None:
        raise ValueError(f"load_cache: {path!r} is not a jets file written by gpucnn.datasets.jets")
    with np.load(path, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
        info = {key: data[key] for key in INFO_KEYS + ("block",)}
    info.update(header)
    return images, labels, info


def generate(n_per_class: int, processes=PROCESSES, pt_range=(550, 650), eta_max: float = 2.0,
             radius: float = 0.8, size: int = 40, extent: float = 0.8, channels: int = 3, mpi: bool = False,
             seed: int = 0, workers: int | None = None, cache=None, progress: bool = True, chunk: int = 500):
    """Simulate top-quark and QCD jets and return ``(images, labels, info)``.

    images: float32 (N, channels, size, size) with N = n_per_class *
    len(processes), pT channels summing to 1 per image; labels: int64 (N,),
    1 = top, 0 = QCD, in blocks of ``chunk`` jets per process (shuffle or use
    ``train_test_split`` before training); info: per-jet arrays ``pt``,
    ``eta``, ``phi``, ``mass`` (GeV, of the anti-kT jet), ``n_constituents``,
    ``block``, plus ``settings``, ``seeds``, ``versions`` and ``stats``.

    pp collisions at 13 TeV: ``Top:gg2ttbar`` and ``Top:qqbar2ttbar`` with
    hadronic W decays ("top") against ``HardQCD:all`` ("qcd"), pT-hat within
    ``pt_range`` widened by 50 GeV on each side; multiple parton interactions
    only with ``mpi=True``. ``workers`` processes (default: one per core), one
    Pythia seed per block drawn from ``seed``: the same seed and ``chunk`` give
    the same images whatever the number of workers. ``cache``: a ``.npz``
    path; reused when its settings, seeds and package versions match, else
    regenerated (with a note saying why).
    """
    settings = _settings(n_per_class, processes, pt_range, eta_max, radius, size, extent, channels, mpi, seed, chunk)
    options = dict(processes=processes, pt_range=pt_range, eta_max=eta_max, radius=radius, size=size, extent=extent,
                   channels=channels, mpi=mpi, seed=seed, workers=workers, chunk=chunk, progress=progress)
    if cache is None:
        with tempfile.TemporaryDirectory(prefix="gpucnn-jets-") as directory:
            path = os.path.join(directory, "jets.npz")
            generate_to_file(path, n_per_class, **options)
            return load_cache(path)
    if os.path.exists(cache):
        header = read_cache_header(cache)
        wanted = {"settings": settings, "seeds": [t["seed"] for t in _tasks(settings)],
                  "versions": physics_versions()}
        if header is not None and _cache_key(header) == wanted:
            return load_cache(cache)
        reason = "it is not a jets file" if header is None else "its " + ", ".join(
            k for k in wanted if header[k] != wanted[k]) + " differ"
        print(f"regenerating {cache}: {reason}")
    generate_to_file(cache, n_per_class, **options)
    return load_cache(cache)


# --- the public top-tagging data set ------------------------------------------------------------

def _four_vectors(path):
    """(E, px, py, pz) per constituent, (N, M, 4), and labels (N,) from a top-tagging file."""
    if str(path).endswith((".h5", ".hdf5")):
        try:
            import pandas
        except ImportError:
            raise ImportError(f"load_jets: reading {path!r} needs pandas and PyTables "
                              f"(pip install pandas tables), or convert it to .npz") from None
        table = pandas.read_hdf(path, key="table")
        columns, labels = {c: table[c].to_numpy() for c in table.columns}, table["is_signal_new"].to_numpy()
    else:
        with np.load(path, allow_pickle=False) as data:
            columns = {k: data[k] for k in data.files}
        if "Pmu" in columns:  # the converted layout: Pmu (N, M, 4) = (E, px, py, pz), is_signal (N,)
            return np.asarray(columns["Pmu"], dtype=np.float64), np.asarray(columns["is_signal"])
        if "is_signal_new" not in columns:
            raise ValueError(f"load_jets: {path!r} has neither Pmu/is_signal nor E_0, PX_0, ..., is_signal_new")
        labels = columns["is_signal_new"]
    m = 0
    while f"E_{m}" in columns:
        m += 1
    if m == 0:
        raise ValueError(f"load_jets: {path!r} has no constituent columns E_0, PX_0, PY_0, PZ_0")
    p4 = np.stack([np.stack([columns[f"{c}_{i}"] for c in ("E", "PX", "PY", "PZ")], axis=-1) for i in range(m)],
                  axis=1)
    return p4.astype(np.float64), np.asarray(labels)


def load_jets(path, size: int = 40, extent: float = 0.8):
    """``(images, labels, info)`` from a file of the public top-tagging data set (arXiv:1902.09914).

    Accepts the original HDF5 table (columns ``E_i, PX_i, PY_i, PZ_i`` of up to
    200 constituents, zero-padded, and ``is_signal_new``; needs pandas and
    PyTables), the same columns in an ``.npz``, or the converted ``.npz``
    layout ``Pmu`` (N, M, 4) = (E, px, py, pz) with ``is_signal``. The data
    has no charges, so the images have one channel (total pT), preprocessed
    as by ``generate``: float32 (N, 1, size, size), labels int64 (1 = top);
    info holds ``pt``, ``eta``, ``phi``, ``mass``, ``n_constituents``.
    """
    _check_image_settings(size, extent, 1, "load_jets")
    p4, labels = _four_vectors(path)
    if p4.ndim != 3 or p4.shape[2] != 4 or labels.shape != p4.shape[:1]:
        raise ValueError(f"load_jets: expected four-vectors (N, M, 4) and labels (N,), got "
                         f"{p4.shape} and {labels.shape}")
    n = len(p4)
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    info = {key: np.zeros(n, dtype=np.int64 if key == "n_constituents" else np.float64) for key in INFO_KEYS}
    for i, jet in enumerate(p4):
        jet = jet[jet[:, 0] > 0]  # zero-padded slots have E = 0
        e, px, py, pz = jet.T
        pt = np.hypot(px, py)
        images[i] = jet_image(pt, np.arcsinh(pz / pt), np.arctan2(py, px), size=size, extent=extent)
        total = jet.sum(axis=0)
        jet_pt = np.hypot(total[1], total[2])
        info["pt"][i], info["eta"][i] = jet_pt, np.arcsinh(total[3] / jet_pt)
        info["phi"][i] = np.arctan2(total[2], total[1])
        info["mass"][i] = np.sqrt(max(total[0] ** 2 - total[1:] @ total[1:], 0.0))
        info["n_constituents"][i] = len(jet)
    return images, labels.astype(np.int64), info
