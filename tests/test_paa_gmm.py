"""PAA's GMM as a measured, robust quantity: degenerate score sets against the official behaviour, the
`data` start against sklearn, and the summary's separation measures."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from detector.assigners.base import AssignResult
from detector.assigners.gmm import fit_gmm
from detector.assigners.paa import PAAConfig, PAADetails, split_candidates
from detector.assigners.paa_details import paa_summary
from tests.test_gmm import TIE_LOG_POSTERIOR, assert_matches_sklearn, candidate_sets, pack

sklearn_mixture = pytest.importorskip("sklearn.mixture")

pytestmark = pytest.mark.usefixtures("one_thread")




def official_positives(scores: np.ndarray) -> int:
    """Positives of one GT by the official code (kkhoot/PAA, separation (c)): sklearn's EM in float64 (as the
    scikit-learn 0.2x it ran) from the official start on the float32 candidate scores; ties within rounding
    (`TIE_LOG_POSTERIOR`) resolved as sklearn resolves exact ones: component 0, the first densest sample."""
    x = np.sort(scores).astype(np.float64)[:, None]
    gm = sklearn_mixture.GaussianMixture(2, weights_init=[0.5, 0.5], means_init=[[x.min()], [x.max()]],
                                         precisions_init=[[[1.0]], [[1.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(x)
    with np.errstate(divide="ignore"):
        log_post = np.log(gm.predict_proba(x))
    fg = log_post[:, 1] - log_post[:, 0] <= TIE_LOG_POSTERIOR
    if not fg.any():
        return len(x)  # "treat all samples as positive for high recall"
    density = gm.score_samples(x)
    return int(np.flatnonzero(fg & (density >= density[fg].max() - TIE_LOG_POSTERIOR))[0]) + 1


def positives(sets: list[np.ndarray], cfg: PAAConfig) -> list[int]:
    """Positives per set from PAA's batched split (one padded row per set, sorted, float32 as PAA scores)."""
    width = max(map(len, sets))
    s = torch.full((len(sets), width), float("inf"))
    for r, x in enumerate(sets):
        s[r, :len(x)] = torch.from_numpy(np.sort(x).astype(np.float32))
    pos, _, _ = split_candidates(s, torch.isfinite(s), cfg)
    return pos.sum(1).tolist()


def degenerate_sets() -> dict[str, np.ndarray]:
    """All scores equal; all equal but one (above or below, by one float32 step up to 1e-4); two clusters
    1e-7 apart. float32, as PAA's scores."""
    out = {}
    for base in (0.05, 1.0, 1.7, 7.9):
        b = np.float32(base)
        for n in (2, 3, 9, 45):
            out[f"equal {base} x{n}"] = np.full(n, b, np.float32)
            for d in (np.nextafter(b, np.float32(np.inf)) - b, 1e-7, 1e-6, 1e-4):
                for sign in (1, -1):
                    x = np.full(n, b, np.float32)
                    x[0] = b + np.float32(sign * d)
                    out[f"equal {base} x{n} but one {sign * d:+.1e}"] = x
            for m in sorted({1, n // 2, n - 1} - {0}):
                x = np.full(n, b, np.float32)
                x[:m] = b + np.float32(1e-7)
                out[f"clusters {base} x{n}, {m} of them 1e-7 up"] = x
    return out


def test_degenerate_score_sets_give_the_official_positives():
    sets = degenerate_sets()
    expected = [official_positives(x) for x in sets.values()]
    got = positives(list(sets.values()), PAAConfig())
    wrong = [(name, e, g) for name, e, g in zip(sets, expected, got) if e != g]
    assert not wrong, wrong[:5]
    # Equal scores: both components coincide, every sample ties, and the first is the one positive (notes 1.6).
    assert all(e == 1 for name, e in zip(sets, expected) if name.startswith("equal") and "but" not in name)
    # The float32 EM (gmm_float64: false) gets many of them wrong: why float64 is the default.
    got32 = positives(list(sets.values()), PAAConfig(gmm_float64=False))
    assert sum(e != g for e, g in zip(expected, got32)) > len(sets) // 10


def test_near_identical_jittered_sets_give_the_official_positives():
    rng = np.random.default_rng(0)
    sets = [(rng.uniform(0.05, 12.0) + rng.normal(0.0, 10 ** rng.uniform(-8, -2), int(rng.choice([2, 9, 45]))))
            .astype(np.float32) for _ in range(150)]
    expected = [official_positives(x) for x in sets]
    assert positives(sets, PAAConfig()) == expected
    assert len(set(expected)) > 5  # not one answer everywhere


def data_init_variances(x: np.ndarray) -> tuple[float, float]:
    """The `data` start, from its definition: the variance of each side of the midpoint, + reg_covar."""
    mid = (x.min() + x.max()) / 2
    sides = [x[x <= mid], x[x > mid]]
    return tuple(float(np.var(side)) + 1e-6 if len(side) else 1e-6 for side in sides)


def test_data_init_equals_sklearn_given_the_same_start():
    sets = candidate_sets(seed=8, count=120)
    scores, valid = pack(sets, scatter=True)
    fit = fit_gmm(scores, valid, dtype=torch.float64, init="data")
    starts = [data_init_variances(x) for x in sets]
    tie_rows = assert_matches_sklearn(sets, fit, row_kwargs=[{"precisions": (1 / v0, 1 / v1)} for v0, v1 in starts])
    assert len(tie_rows) <= 0.1 * len(sets)
    official = fit_gmm(scores, valid, dtype=torch.float64)
    assert (fit.n_iter != official.n_iter).float().mean() > 0.3  # a different start, not a relabelled one
    # A row of one valid score and an empty row keep their defined states.
    edge = fit_gmm(torch.tensor([[2.5, 0.0], [0.0, 0.0]]), torch.tensor([[True, False], [False, False]]), init="data")
    assert edge.predict().tolist() == [[0, -1], [-1, -1]] and edge.variances[1].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="official, data"):
        fit_gmm(scores, valid, init="kmeans")


def test_data_init_separates_a_narrow_bimodal_set_the_official_start_does_not():
    # Scores spanning much less than 1 (early training, notes 8.7): from variance 1 EM stops after 3
    # iterations with both means at 0.124; from the data's own spread it finds the clusters (0.102, 0.133).
    x = np.concatenate([np.linspace(0.100, 0.104, 5), np.linspace(0.130, 0.136, 12)])
    scores, valid = pack([x], n_cols=len(x))
    data = fit_gmm(scores, valid, init="data")
    official = fit_gmm(scores, valid)
    assert data.predict()[0].tolist() == [0] * 5 + [1] * 12
    sep = lambda f: float((f.means[0, 1] - f.means[0, 0]).abs() / f.variances[0].sqrt().min())  # noqa: E731
    assert sep(data) > 3 > sep(official)


def summary_of(sets: list[np.ndarray], cfg: PAAConfig):
    """`paa_summary` of one GT per set (sorted float32 candidate scores), and the GMM fit."""
    width = max(map(len, sets))
    s = torch.full((len(sets), width), float("inf"))
    for r, x in enumerate(sets):
        s[r, :len(x)] = torch.from_numpy(np.sort(x).astype(np.float32))
    v = torch.isfinite(s)
    pos, _, fit = split_candidates(s, v, cfg)
    rows = torch.arange(len(sets))
    details = PAADetails(image=rows, gt=rows, gt_labels=rows, scores=s, valid=v, positive=pos, fit=fit)
    result = AssignResult(matched_gt=torch.zeros(1, 1, dtype=torch.long), iou=torch.zeros(1, 1),
                          weight=torch.ones(1, 1), details=details)
    return paa_summary(result), fit


def test_summary_measures_separation_and_em_iterations():
    separated = np.array([0.1, 0.12, 0.15, 0.2, 2.0, 2.1, 2.2, 2.4, 2.5, 2.6])
    identical = np.full(9, 0.7)
    single = np.array([0.4])  # one candidate: no fit to measure
    summary, fit = summary_of([separated, identical, single], PAAConfig())
    assert summary["paa/gmm_degenerate_share"] == 0.5
    assert summary["paa/gmm_em_iters"] == pytest.approx(fit.n_iter[:2].float().mean().item())
    assert summary["paa/candidates_per_gt"] == pytest.approx(9.5)
    stds = fit.variances.sqrt()
    assert (fit.means[0, 1] - fit.means[0, 0]).abs() > stds[0].min()
    assert (fit.means[1, 1] - fit.means[1, 0]).abs() < stds[1].min()


def test_gmm_settings_are_config_fields():
    from detector.config import ConfigError, build_config

    paa = build_config({}).assign.paa
    assert paa.gmm_float64 is True and paa.gmm_init == "official" and paa.gmm_tol == 1e-3
    assert build_config({"assign": {"paa": {"gmm_init": "data"}}}).assign.paa.gmm_init == "data"
    with pytest.raises(ConfigError, match=r"assign\.paa: gmm_init 'kmeans' is not one of official, data"):
        build_config({"assign": {"paa": {"gmm_init": "kmeans"}}})
