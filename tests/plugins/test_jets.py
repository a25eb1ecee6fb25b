"""The jets dataset: the detector's pieces and their symmetries, the physics of each process,
seeds independent of the number of workers, the cache, the CLI and the missing-extra message."""

import math
import sys

import numpy as np
import pytest
import torch

from symfw.core import kinematics as K
from symfw.core.data import load_events, resolve_data
from symfw.core.errors import DataError, UsageError
from symfw.core.groups import act, random_elements
from symfw.plugins import jets as J
from symfw.plugins.detector import DetectorOptions, measure

OFF = dict(eta_max=None, track_eta_max=None, track_resolution=None, ecal_resolution=None, hcal_resolution=None,
           towers=None, track_pt_min=None, calo_e_min=None)


def detector(**on):
    return DetectorOptions(**{**OFF, **on})


def particles(pt, eta, phi, charge, pid, m=0.0):
    """Flat particles of one jet from (pT, η, φ) lists."""
    pt, eta, phi = (np.asarray(x, float) for x in (pt, eta, phi))
    p4 = K.from_pt_eta_phi_m(pt, eta, phi, np.full_like(pt, m))
    n = len(pt)
    return p4, np.broadcast_to(np.asarray(charge, np.int8), n).copy(), np.broadcast_to(np.asarray(pid), n).copy(), np.zeros(n, np.int64)


def run(parts, options, seed=0):
    return measure(*parts, options, np.random.default_rng(seed))


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# --------------------------------------------------------------------------- the detector, piece by piece


def test_off_detector_passes_particles_through():
    parts = particles([5, 50, 2], [0.1, -1, 2], [0, 1, -2], [3, -3, 0], [211, -211, 22])
    meas, true, jet = run(parts, detector())
    assert np.allclose(meas[:2], parts[0][:2]) and np.allclose(true, parts[0])  # photon: massless anyway
    assert np.allclose(meas[2], parts[0][2])


def test_towers_merge_neutral_particles_but_not_tracks():
    # two photons and two pions in the cell η ∈ [0.1, 0.2), φ ∈ one cell; one photon elsewhere
    parts = particles([10, 20, 5, 6, 7], [0.12, 0.18, 0.13, 0.17, 1.05], [0.01, 0.03, 0.02, 0.04, 1.0],
                      [0, 0, 3, 3, 0], [22, 22, 211, 211, 22])
    meas, true, _ = run(parts, detector(towers=(0.1, 0.1)))
    assert len(meas) == 4  # 2 tracks + 2 towers
    assert np.allclose(meas[:2], parts[0][2:4])
    towers, tower_true = meas[2:], true[2:]
    merged = np.argmax(towers[:, 0])
    assert towers[merged, 0] == pytest.approx(parts[0][0, 0] + parts[0][1, 0])
    assert np.allclose(tower_true[merged], parts[0][0] + parts[0][1])
    d_phi = 2 * math.pi / round(2 * math.pi / 0.1)
    assert K.eta(t(towers[merged])).item() == pytest.approx(0.15)
    assert K.phi(t(towers[merged])).item() == pytest.approx((math.floor((0.01 + math.pi) / d_phi) + 0.5) * d_phi - math.pi)
    assert np.allclose(K.mass(t(towers)).numpy(), 0, atol=1e-6)


def test_thresholds_drop_soft_tracks_and_deposits():
    parts = particles([0.3, 0.7, 0.8 / math.cosh(0.5), 1.5 / math.cosh(0.5)], [0, 0, 0.5, 0.5], [0, 1, 2, -2],
                      [3, 3, 0, 0], [211, 211, 22, 22])
    meas, _, _ = run(parts, detector(track_pt_min=0.5, calo_e_min=1.0))
    assert sorted(np.round(K.pt(t(meas[:1])).numpy(), 6)) == [0.7]
    assert np.round(meas[1:, 0], 6).tolist() == [1.5]
    assert len(run(parts, detector())[0]) == 4


def test_acceptance_and_tracker_coverage():
    parts = particles([5, 5, 5], [5.0, 3.0, 1.0], [0, 0, 0], [3, 3, 3], [211, 211, 211], m=0.13957)
    meas, true, _ = run(parts, detector(eta_max=4.9, track_eta_max=2.5))
    assert len(meas) == 2  # η = 5 is lost
    assert K.mass(t(meas)).numpy() == pytest.approx([0.13957, 0.0], abs=1e-6)  # η = 3: a massless deposit
    assert np.allclose(true[1], parts[0][1])


@pytest.mark.parametrize("pt", [5.0, 500.0])
def test_tracker_resolution_grows_with_pt(pt):
    n = 20_000
    parts = particles(np.full(n, pt), np.zeros(n), np.zeros(n), 3, 211, m=0.13957)
    meas, _, _ = run(parts, detector(track_resolution=(0.01, 0.0005)))
    ratio = K.pt(t(meas)).numpy() / pt - 1
    assert ratio.std() == pytest.approx(math.hypot(0.01, 0.0005 * pt), rel=0.03)
    assert abs(ratio.mean()) < 4 * ratio.std() / math.sqrt(n)


@pytest.mark.parametrize("pid, res", [(22, (0.10, 0.01)), (2112, (0.50, 0.03))])
@pytest.mark.parametrize("energy", [4.0, 400.0])
def test_calorimeter_resolution_is_a_over_sqrt_e_plus_b(pid, res, energy):
    n = 20_000
    parts = particles(np.full(n, energy), np.zeros(n), np.zeros(n), 0, pid)
    meas, _, _ = run(parts, detector(ecal_resolution=(0.10, 0.01), hcal_resolution=(0.50, 0.03)))
    rel = meas[:, 0] / energy - 1  # (a deposit smeared below zero, 4σ away at 4 GeV, is dropped)
    assert len(rel) > 0.999 * n
    assert rel.std() == pytest.approx(math.hypot(res[0] / math.sqrt(energy), res[1]), rel=0.03)


def _mixed_jet(n=300, seed=0):
    rng = np.random.default_rng(seed)
    charge = rng.choice([-3, 0, 3], n).astype(np.int8)
    pid = np.where(charge == 0, rng.choice([22, 130], n), 211 * np.sign(charge).astype(int))
    p4 = K.from_pt_eta_phi_m(rng.exponential(8, n) + 0.2, rng.uniform(-1.5, 1.5, n), rng.uniform(-3, 3, n),
                             np.where(charge == 0, 0.0, 0.13957))
    return p4, charge, pid, np.zeros(n, np.int64)


def _commutes(options, element, parts):
    """measure(Λp) == Λ measure(p) with the same draws (as sets of objects: towers come in cell order)."""
    moved = act(element, t(parts[0])[None]).numpy()[0]
    a = run((moved, *parts[1:]), options, seed=4)[0]
    b = act(element, t(run(parts, options, seed=4)[0])[None]).numpy()[0]
    a, b = a[np.argsort(a[:, 0])], b[np.argsort(b[:, 0])]
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-9, atol=1e-9)


def _element(generator, theta):
    return random_elements("lorentz", 1, generators=[generator], rapidity=(theta, theta), angle=(theta, theta))[0]


def test_each_piece_keeps_the_symmetry_docs_say_and_breaks_the_next():
    parts = _mixed_jet()
    tracker = detector(track_resolution=(0.01, 0.0005), track_pt_min=0.5)
    calo = detector(ecal_resolution=(0.10, 0.01), hcal_resolution=(0.5, 0.03), calo_e_min=1.0)
    towers = detector(towers=(0.1, 0.1))
    # tracker: SO(1,1)_z × SO(2)_z kept, transverse boosts broken
    assert _commutes(tracker, _element("Kz", 0.7), parts) and _commutes(tracker, _element("Jz", 0.3), parts)
    assert not _commutes(tracker, _element("Kx", 0.3), parts)
    # calorimeter resolution and energy threshold: SO(3) kept, boosts (even along z) broken
    neutral = tuple(x[parts[1] == 0] for x in parts)
    assert _commutes(calo, _element("Jx", 0.4), neutral) and _commutes(calo, _element("Jz", 0.4), neutral)
    assert not _commutes(calo, _element("Kz", 0.3), neutral)
    # towers: rotations about z by a whole cell kept, by half a cell broken
    d_phi = 2 * math.pi / round(2 * math.pi / 0.1)
    assert _commutes(towers, _element("Jz", 3 * d_phi), neutral)
    assert not _commutes(towers, _element("Jz", 0.5 * d_phi), neutral)


def test_pad_sorts_by_pt_truncates_and_masks():
    p4 = K.from_pt_eta_phi_m(np.array([1.0, 5, 3, 2, 9]), np.zeros(5), np.zeros(5))
    jet = np.array([0, 0, 0, 1, 1])
    out, true, mask = J.pad(p4, p4 * 2, jet, 2, 2)
    assert K.pt(t(out)).numpy().tolist() == [[5, 3], [9, 2]]
    assert np.allclose(true, out * 2) and mask.all()
    with pytest.raises(DataError, match="jet 2 with no particles"):
        J.pad(p4, p4, jet, 3, 2)


# --------------------------------------------------------------------------- options, the missing extra


def test_options_are_validated():
    assert J.JetsOptions(processes="top,qcd").processes == ["top", "qcd"]
    assert J.JetsOptions(processes=["quark", "gluon"]).jet_radius == 0.4
    assert J.JetsOptions(processes=["quark", "top"]).jet_radius == 0.8
    for bad, message in [({"processes": ["top"]}, "at least two distinct"), ({"processes": ["top", "top"]}, "distinct"),
                         ({"processes": ["top", "higgs"]}, "'top', 'w', 'qcd', 'quark' or 'gluon'"),
                         ({"pt_range": [650, 550]}, "pt_range must be"), ({"detector": {"towers": [0.1]}}, "towers")]:
        with pytest.raises(DataError, match=message):
            resolve_data("jets", n_events=4, options=bad)


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, runner, cli, tmp_path):
    monkeypatch.setitem(sys.modules, "pythia8mc", None)  # import fails
    with pytest.raises(UsageError, match=r"pip install 'symfw\[jets\]'"):
        J.Jets().generate(10, 0)
    result = runner.invoke(cli, ["data", "generate", "jets", "--events", "10", "--out", str(tmp_path / "j.npz")])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: dataset 'jets' needs Pythia 8: pip install 'symfw[jets]'"


# --------------------------------------------------------------------------- Pythia: physics, seeds, cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    pytest.importorskip("pythia8mc")
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("symfw-cache")
        mp.setenv("SYMFW_CACHE", str(root))
        yield root


BOOSTED = dict(processes=["qcd", "top", "w"], chunk_size=400, workers=2)
N_BOOSTED = 3 * 120


@pytest.fixture(scope="module")
def boosted(cache):
    return J.Jets(J.JetsOptions(**BOOSTED)).generate(N_BOOSTED, seed=1)


@pytest.fixture(scope="module")
def quark_gluon(cache):
    return J.Jets(J.JetsOptions(processes=["quark", "gluon"], chunk_size=400, workers=2)).generate(160, seed=1)


def jet_of(data, cls):
    return t(data.p4[data.label == cls].sum(1))


def test_pythias_fjcore_clusters_as_fastjet_does(cache):
    """SlowJet (fjcore inside Pythia), as the generator runs it, against the fastjet package on the same events."""
    fj = pytest.importorskip("fastjet")
    p8 = J._pythia()
    pythia = p8.Pythia("", False)
    for line in ["Print:quiet = on", "Random:setSeed = on", "Random:seed = 3", *J.PYTHIA["qcd"],
                 "PhaseSpace:pTHatMin = 500."]:
        assert pythia.readString(line)
    assert pythia.init()
    slow = p8.SlowJet(-1, 0.8, 100.0, 25.0, 2, 2)
    for _ in range(5):
        assert pythia.next()
        event = pythia.event
        slow.analyze(event)
        visible = []
        for i, particle in enumerate(event.particles()):
            if particle.isFinal() and particle.isVisible():
                visible.append(fj.PseudoJet(particle.px(), particle.py(), particle.pz(), particle.e()))
                visible[-1].set_user_index(i)
        sequence = fj.ClusterSequence(visible, fj.JetDefinition(fj.antikt_algorithm, 0.8))  # alive while jets are read
        jets = fj.sorted_by_pt(sequence.inclusive_jets(100.0))
        assert [sorted(slow.constituents(j)) for j in range(slow.sizeJet())] == \
            [sorted(c.user_index() for c in jet.constituents()) for jet in jets]
        assert [slow.pT(j) for j in range(slow.sizeJet())] == pytest.approx([jet.pt() for jet in jets], rel=1e-12)


def test_top_jets_peak_at_the_top_mass_and_carry_the_top(boosted):
    assert 160 < K.mass(jet_of(boosted, 1)).median() < 185
    top = t(boosted.target[boosted.label == 1])
    assert 171 < K.mass(top).median() < 174  # Pythia's m_t = 172.5 GeV
    assert (K.delta_r(top, jet_of(boosted, 1)) < 0.8).all()


def smallest_subjet_pair_mass(p4, mask):
    """Per jet: the smallest pair mass of its three exclusive kT subjets (FastJet, independent of Pythia's fjcore)."""
    fj = pytest.importorskip("fastjet")
    out = []
    for jet, real in zip(p4, mask):
        sequence = fj.ClusterSequence([fj.PseudoJet(*v[[1, 2, 3, 0]]) for v in jet[real]],
                                      fj.JetDefinition(fj.kt_algorithm, 1.0))
        sub = sequence.exclusive_jets(3)
        out.append(min((sub[i] + sub[j]).m() for i, j in ((0, 1), (0, 2), (1, 2))))
    return np.array(out)


def test_top_jets_hold_a_w_in_their_subjets(boosted):
    """t → bW → bqq̄': of the three kT subjets, the lightest pair is mostly the W (≈ 80 GeV); not in QCD jets."""
    top = smallest_subjet_pair_mass(boosted.p4[boosted.label == 1], boosted.mask[boosted.label == 1])
    qcd = smallest_subjet_pair_mass(boosted.p4[boosted.label == 0], boosted.mask[boosted.label == 0])
    assert 65 < np.median(top) < 95
    window = lambda m: ((m > 65) & (m < 95)).mean()  # noqa: E731
    assert window(top) > 0.4 and window(qcd) < 0.2


def test_w_jets_peak_at_the_w_mass(boosted):
    assert 70 < K.mass(jet_of(boosted, 2)).median() < 95
    assert 79.5 < K.mass(t(boosted.target[boosted.label == 2])).median() < 81.5


def test_qcd_jet_mass_falls_beyond_its_peak(boosted):
    density, _ = np.histogram(K.mass(jet_of(boosted, 0)).numpy(), [50, 100, 150, 300])
    density = density / np.diff([50, 100, 150, 300])  # jets per GeV: seeds 1-5 give 1.1, 0.4, 0.1
    assert (density[1:] < 0.7 * density[:-1]).all(), density
    assert K.mass(jet_of(boosted, 0)).median() < 120


def test_quark_jets_have_fewer_constituents_than_gluon_jets(quark_gluon):
    n = quark_gluon.mask.sum(1)
    assert np.median(n[quark_gluon.label == 0]) + 5 < np.median(n[quark_gluon.label == 1])
    assert quark_gluon.meta["radius"] == 0.4


def test_jets_are_in_the_window_sorted_and_padded(boosted, quark_gluon):
    for data in (boosted, quark_gluon):
        pt = K.pt(t(data.p4)).numpy()
        assert (np.diff(np.where(data.mask, pt, -1), axis=1) <= 0).all()  # hardest first, padding last
        assert (data.p4[~data.mask] == 0).all() and data.p4.shape[1] == 128
        assert np.bincount(data.label).tolist() == [len(data) // data.n_classes] * data.n_classes


def test_particle_level_jets_from_the_cache(boosted, cache):
    """detector=null and target=truth-jet reuse the cached chunks: the constituents sum to the jet."""
    truth = J.Jets(J.JetsOptions(**BOOSTED, detector=None, target="truth-jet")).generate(N_BOOSTED, seed=1)
    assert np.array_equal(truth.label, boosted.label) and np.array_equal(truth.p4, truth.p4_true)
    whole = truth.mask.sum(1) < 128
    assert np.allclose(truth.p4[whole].sum(1), truth.target[whole])
    jet = t(truth.target)
    assert ((K.pt(jet) > 550) & (K.pt(jet) < 650) & (K.eta(jet).abs() < 2)).all()
    # the detector changes the objects, not the jets: its tracks' truth are the jets' particles
    assert (boosted.p4_true[whole].sum(1)[:, 0] <= truth.p4[whole].sum(1)[:, 0] + 1e-6).all()


def test_a_second_run_reads_the_cache(boosted, cache, monkeypatch):
    options = J.JetsOptions(**BOOSTED)
    assert all(J.chunk_path(J.chunk_settings(options, p), 1, 0).is_file() for p in options.processes)
    monkeypatch.setattr(J, "generate_chunk", lambda *a, **k: pytest.fail("generated again"))
    again = J.Jets(J.JetsOptions(**BOOSTED)).generate(N_BOOSTED, seed=1)
    assert np.array_equal(again.p4, boosted.p4) and np.array_equal(again.target, boosted.target)
    assert again.meta == boosted.meta
    other = J.JetsOptions(**{**BOOSTED, "pt_range": (500, 600)})  # another particle-level sample: another file
    assert not J.chunk_path(J.chunk_settings(other, "top"), 1, 0).exists()


def test_same_seed_same_jets_whatever_the_number_of_workers(cache):
    def make(workers, seed=5, n=8):
        o = J.JetsOptions(processes=["qcd", "top"], chunk_size=2, workers=workers, cache=False)
        return J.Jets(o).generate(n, seed)

    one, two = make(1), make(2)  # two chunks of two jets per process
    assert np.array_equal(one.p4, two.p4) and np.array_equal(one.label, two.label)
    assert np.array_equal(one.target, two.target)
    assert not any(np.array_equal(a, b) for a in make(1, seed=6, n=2).p4 for b in one.p4)
    assert list(cache.glob("jets/*-seed5/*")) == []  # cache=False writes nothing


def test_cli_generates_jets_with_process_and_reports_the_rate(cache, runner, cli, tmp_path):
    out = tmp_path / "jets.npz"
    result = runner.invoke(cli, ["data", "generate", "jets", "--process", "top,qcd", "--events", "4",
                                 "--set", "chunk_size=2", "--set", "workers=1", "--seed", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "events/s" in result.stderr
    data = load_events(out)
    assert data.meta["processes"] == "top,qcd" and np.bincount(data.label).tolist() == [2, 2]
    assert data.target.shape == (4, 4) and data.p4_true.shape == data.p4.shape
    top = t(data.target[data.label == 0])
    assert (K.mass(top) > 150).all()  # label 0 is the first process, top


def test_train_takes_data_jets(cache, runner, cli, tmp_path):
    result = runner.invoke(cli, ["train", "pfn", "--data", "jets", "--events", "10", "--epochs", "1",
                                 "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "test AUC" in result.stdout


@pytest.mark.slow
def test_ray_makes_the_same_jets(cache):
    pytest.importorskip("ray")

    def make(executor):
        o = J.JetsOptions(processes=["qcd", "top"], chunk_size=2, workers=1, cache=False, executor=executor)
        return J.Jets(o).generate(8, 5)

    local, remote = make("local"), make("ray")
    assert np.array_equal(local.p4, remote.p4) and np.array_equal(local.target, remote.target)
