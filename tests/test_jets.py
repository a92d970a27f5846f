"""Jet images: the preprocessing against hand-worked cases and symmetries, the public-data reader,
and (with the physics extra) a few dozen Pythia jets per class: shapes, window, normalisation, seeds."""

import importlib.util
import os
import stat
import sys

import numpy as np
import pytest

from gpucnn.datasets import jets

HAS_PHYSICS = all(importlib.util.find_spec(m) is not None for m in ("pythia8mc", "fastjet"))
needs_physics = pytest.mark.skipif(not HAS_PHYSICS, reason='needs the physics extra: pip install "gpucnn[physics]"')

N_PER_CLASS, CHUNK = 16, 8  # two blocks per class, so two workers run different seeds


# --- preprocessing (NumPy only) ---------------------------------------------------------------

def test_two_constituents_land_on_the_pixels_worked_out_by_hand():
    # pT 3 at (eta, phi) = (0, 0) and pT 1 at (0.4, 0): the centroid is eta = 0.1; the principal
    # axis (along eta) turns vertical, the harder one goes up: y = +0.1 and y = -0.3, x = 0.
    # With 40 pixels over +-0.8 (0.04 each): column floor(0.8 / 0.04) = 20,
    # rows floor((0.8 - 0.1) / 0.04) = 17 and floor((0.8 + 0.3) / 0.04) = 27.
    image = jets.jet_image([3.0, 1.0], [0.0, 0.4], [0.0, 0.0], size=40, extent=0.8)
    expected = np.zeros((1, 40, 40), np.float32)
    expected[0, 17, 20], expected[0, 27, 20] = 0.75, 0.25
    np.testing.assert_allclose(image, expected, atol=1e-7)


def _random_jet(rng, n=30):
    pt = rng.exponential(10.0, n) + 0.5
    # three prongs of different hardness, so the orientation and the flips are well defined
    centres = np.array([[0.0, 0.0], [0.25, 0.1], [-0.1, 0.3]])
    which = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    eta, phi = (centres[which] + rng.normal(0, 0.03, (n, 2))).T
    return pt, eta, phi, rng.random(n) < 0.6


def test_image_does_not_depend_on_where_the_jet_points_or_how_it_is_turned():
    rng = np.random.default_rng(1)
    pt, eta, phi, charged = _random_jet(rng)
    base = jets.jet_image(pt, eta, phi, charged, channels=3)
    for angle in (0.7, 2.0, -2.9):
        c, s = np.cos(angle), np.sin(angle)
        e2, p2 = c * eta - s * phi, s * eta + c * phi
        # moved to eta 1.3 and across phi = +-pi: the wrap must keep the jet in one piece
        moved = jets.jet_image(pt, e2 + 1.3, jets.wrap_phi(p2 + np.pi - 0.05), charged, channels=3)
        np.testing.assert_allclose(moved, base, atol=1e-6)
        mirrored = jets.jet_image(pt, -e2, p2, charged, channels=3)  # a reflection is undone by the flips
        np.testing.assert_allclose(mirrored, base, atol=1e-6)


def test_preprocessed_jet_is_centred_vertical_and_harder_up_and_right():
    rng = np.random.default_rng(2)
    pt, eta, phi, _ = _random_jet(rng, 200)
    image = jets.jet_image(pt, eta, phi, size=80, extent=0.8)[0].astype(np.float64)
    centres = (np.arange(80) + 0.5) * 0.02 - 0.8
    y, x = centres[::-1][:, None], centres[None, :]  # row 0 is the top (+y)
    assert abs((image * x).sum()) < 0.01 and abs((image * y).sum()) < 0.01  # centroid, to a pixel
    assert (image * y ** 2).sum() > (image * x ** 2).sum()  # the long axis is vertical
    assert image[:, 40:].sum() >= image[:, :40].sum() and image[:40].sum() >= image[40:].sum()


def test_three_channels_split_charged_neutral_and_count_particles():
    pt = np.array([4.0, 2.0, 1.0, 1.0])
    eta = np.array([0.0, 0.01, 0.3, -0.2])
    phi = np.array([0.0, 0.0, 0.2, 0.1])
    charged = np.array([True, False, True, True])
    three = jets.jet_image(pt, eta, phi, charged, channels=3)
    one = jets.jet_image(pt, eta, phi, channels=1)
    np.testing.assert_allclose(three[0] + three[1], one[0], atol=1e-7)  # charged + neutral = total pT
    assert three[:2].sum() == pytest.approx(1.0)
    assert three[2].sum() == 3 and np.array_equal(three[2] > 0, three[0] > 0)
    assert three[1].sum() == pytest.approx(2.0 / 8.0)


def test_jet_image_rejects_bad_input():
    with pytest.raises(ValueError, match="channels=3 needs the charged"):
        jets.jet_image([1.0], [0.0], [0.0], channels=3)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        jets.jet_image([1.0], [0.0], [0.0], channels=2)
    with pytest.raises(ValueError, match="one length"):
        jets.jet_image([1.0, 2.0], [0.0], [0.0])


def test_standardize_uses_training_statistics_only():
    rng = np.random.default_rng(3)
    train = rng.normal(2.0, 3.0, (500, 2, 4, 4))
    test = rng.normal(-1.0, 1.0, (7, 2, 4, 4))
    out_train, out_test = jets.standardize(train, test, regulator=0.05)
    std = train.std(axis=0)
    scale = std + 0.05 * std.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out_test, (test - train.mean(axis=0)) / scale, rtol=1e-5)
    np.testing.assert_allclose(out_train.mean(axis=0), 0, atol=1e-5)
    with pytest.raises(ValueError, match="array 1 has images of shape"):
        jets.standardize(train, test[:, :1])


def test_train_test_split_is_stratified_disjoint_and_complete():
    labels = np.array([0] * 30 + [1] * 10)
    train, test = jets.train_test_split(40, labels, 0.2, seed=5)
    assert sorted(np.concatenate([train, test])) == list(range(40))
    assert labels[test].sum() == 2 and len(test) == 8
    again = jets.train_test_split(40, labels, 0.2, seed=5)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def _four_vectors(pt, eta, phi, mass=0.0):
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.stack([np.sqrt(px ** 2 + py ** 2 + pz ** 2 + mass ** 2), px, py, pz], axis=-1)


@pytest.mark.parametrize("layout", ["Pmu", "columns"])
def test_load_jets_reads_the_top_tagging_layouts(tmp_path, layout):
    rng = np.random.default_rng(4)
    constituents = [_random_jet(rng, n)[:3] for n in (12, 25, 5)]
    p4 = np.zeros((3, 30, 4))  # zero-padded to 30 slots, as the public files are to 200
    for i, (pt, eta, phi) in enumerate(constituents):
        p4[i, :len(pt)] = _four_vectors(pt, eta + 0.5, phi + 3.0)
    labels = np.array([1, 0, 1])
    path = tmp_path / "jets.npz"
    if layout == "Pmu":
        np.savez(path, Pmu=p4, is_signal=labels)
    else:
        np.savez(path, is_signal_new=labels,
                 **{f"{c}_{j}": p4[:, j, k] for j in range(30) for k, c in enumerate(("E", "PX", "PY", "PZ"))})
    images, got_labels, info = jets.load_jets(path)
    assert images.shape == (3, 1, 40, 40) and images.dtype == np.float32
    assert np.array_equal(got_labels, labels)
    for i, (pt, eta, phi) in enumerate(constituents):
        np.testing.assert_allclose(images[i], jets.jet_image(pt, eta, phi), atol=1e-6)
        total = p4[i].sum(axis=0)
        assert info["mass"][i] == pytest.approx(np.sqrt(total[0] ** 2 - total[1] ** 2 - total[2] ** 2 - total[3] ** 2))
        assert info["n_constituents"][i] == len(pt)


def test_missing_physics_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pythia8mc", None)  # import now fails as if not installed
    with pytest.raises(ImportError, match=r'pip install "gpucnn\[physics\]"'):
        jets.generate(2, progress=False)


def test_generate_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_per_class"):
        jets.generate(0)
    with pytest.raises(ValueError, match="processes"):
        jets.generate(2, processes=("top", "higgs"))
    with pytest.raises(ValueError, match="pt_range"):
        jets.generate(2, pt_range=(650, 550))


# --- Pythia + FastJet -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jets") / "jets.npz"
    first = jets.generate(N_PER_CLASS, chunk=CHUNK, workers=2, seed=0, cache=str(cache), progress=False)
    return first, cache


@needs_physics
def test_generated_jets_have_the_promised_shapes_window_and_normalisation(generated):
    (images, labels, info), _ = generated
    n = 2 * N_PER_CLASS
    assert images.shape == (n, 3, 40, 40) and images.dtype == np.float32
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [N_PER_CLASS, N_PER_CLASS]
    assert np.all((info["pt"] >= 550) & (info["pt"] <= 650)) and np.all(np.abs(info["eta"]) < 2.0)
    np.testing.assert_allclose(images[:, :2].sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)  # pT channels sum to 1
    counts = images[:, 2].sum(axis=(1, 2))
    assert np.all(counts == np.round(counts)) and np.all((counts > 0) & (counts <= info["n_constituents"]))
    assert np.all(images >= 0)
    # charged multiplicity sits exactly where there is charged pT
    assert np.array_equal(images[:, 2] > 0, images[:, 0] > 0)
    assert info["settings"]["n_per_class"] == N_PER_CLASS and len(info["seeds"]) == 4


@needs_physics
def test_same_seed_same_jets_whatever_the_workers_and_another_seed_other_jets(generated):
    (images, labels, info), cache = generated
    again, again_labels, _ = jets.generate(N_PER_CLASS, chunk=CHUNK, workers=1, seed=0, progress=False)
    assert np.array_equal(again, images) and np.array_equal(again_labels, labels)
    other, _, _ = jets.generate(N_PER_CLASS, chunk=CHUNK, workers=2, seed=1, progress=False)
    assert not np.any(np.all(other == images, axis=(1, 2, 3)))


@needs_physics
def test_blocks_run_by_different_workers_are_different_events(generated):
    (images, _, info), _ = generated
    assert len(set(info["seeds"])) == len(info["seeds"])
    flat = images.reshape(len(images), -1)
    assert len(np.unique(flat, axis=0)) == len(images)  # no jet appears twice, in or across blocks
    assert len(np.unique(info["pt"])) == len(images)


@needs_physics
def test_cache_is_reused_when_the_settings_match_and_regenerated_when_not(generated, monkeypatch, capsys):
    (images, _, _), cache = generated

    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated although the cache matches")

    monkeypatch.setattr(jets, "generate_to_file", no_generation)
    cached, _, _ = jets.generate(N_PER_CLASS, chunk=CHUNK, workers=2, seed=0, cache=str(cache), progress=False)
    assert np.array_equal(cached, images)
    with pytest.raises(AssertionError, match="regenerated"):
        jets.generate(N_PER_CLASS, chunk=CHUNK, seed=0, size=32, cache=str(cache), progress=False)
    out = capsys.readouterr().out
    assert "regenerating" in out and "settings differ" in out
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o666 & ~umask  # the mode any new file gets


@needs_physics
def test_top_jets_are_heavier_than_qcd_jets(generated):
    (_, labels, info), _ = generated
    # A loose physics check on a few dozen jets: the top mass peak against the falling QCD spectrum.
    assert 140 < np.median(info["mass"][labels == 1]) < 210
    assert np.median(info["mass"][labels == 0]) < np.median(info["mass"][labels == 1]) - 40


# --- the zoo models the comparison trains -----------------------------------------------------

@pytest.mark.parametrize("size", [8, (40, 32)])
def test_dnn_is_dense_only_and_fits_any_image_size(size):
    import gpucnn as gc
    from gpucnn.models import build_model

    model = build_model("dnn", 3, 2, size, rng=0)
    h, w = (size, size) if isinstance(size, int) else size
    assert not any(isinstance(layer, gc.Conv2D) for layer in model.layers)
    dense = [layer for layer in model.layers if isinstance(layer, gc.Dense)]
    assert [d.params["W"].shape for d in dense] == [(128, 3 * h * w), (64, 128), (2, 64)]
    assert model.forward(np.zeros((5, 3, h, w), np.float32), training=False).shape == (5, 2)


def test_jet_small_keeps_the_position_and_has_the_documented_size():
    from gpucnn.models import build_model

    model = build_model("jet-small", 3, 2, 40, rng=0)
    # 5x5 3->16, 3x3 16->32, 3x3 32->32, three poolings 40 -> 5, dense 32*5*5 -> 64 -> 2
    expected = (16 * 3 * 25 + 16) + (32 * 16 * 9 + 32) + (32 * 32 * 9 + 32) + (800 * 64 + 64) + (64 * 2 + 2)
    assert sum(int(np.prod(p.value.shape)) for p in model.parameters()) == expected
    # A flatten head, not global pooling: in a centred, rotated jet image where a prong sits matters.
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "Flatten" in kinds and "GlobalAvgPool2D" not in kinds
    assert model.forward(np.zeros((4, 3, 40, 40), np.float32), training=False).shape == (4, 2)
