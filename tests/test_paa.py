"""PAA: separation schemes (Fig. 3 a-d), FNP / FSR, edge cases under both conventions, end-to-end tracking."""
from __future__ import annotations

import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from detector.assigners import assign
from detector.assigners.gmm import GMMFit
from detector.assigners.paa import PAAConfig, assign_paa, first_matching, separate, split_candidates
from tests.conftest import tiny_config
from tests.test_assigners import make_inputs, random_gts


def dense_pairs(iou: torch.Tensor):
    """Pairs (IoU > 0) of a dense (B, M, A) IoU matrix, all GTs valid."""
    from detector.assigners.pairs import Pairs

    image, gt, anchor = (iou > 0).nonzero(as_tuple=True)
    return Pairs(image, gt, anchor, iou[image, gt, anchor])


def hand_fit(comps: list[int], peaks: dict[int, int], n_pad: int = 0) -> tuple[GMMFit, torch.Tensor]:
    """A one-row GMMFit with given components of the (sorted) candidates and the position of each
    component's mixture-density peak; `n_pad` invalid entries are appended."""
    n = len(comps) + n_pad
    valid = torch.tensor([True] * len(comps) + [False] * n_pad)[None]
    comp = torch.tensor(comps + [0] * n_pad)
    post = torch.nn.functional.one_hot(comp, 2).float()[None] * valid[..., None]
    dens = torch.full((1, n), -5.0)
    for position in peaks.values():
        dens[0, position] = -1.0
    dens[~valid] = -math.inf
    z = torch.zeros(1, 2)
    fit = GMMFit(means=z, variances=z + 1, weights=z + 0.5, posteriors=post, log_density=dens,
                 n_iter=torch.ones(1, dtype=torch.long), converged=torch.ones(1, dtype=torch.bool), valid=valid)
    return fit, valid


def labels(pos, ignore) -> str:
    """'+' positive, '?' ignored, '-' negative, per sorted candidate of row 0."""
    return "".join("+" if p else "?" if i else "-" for p, i in zip(pos[0].tolist(), ignore[0].tolist()))


BIMODAL = ([0, 0, 0, 0, 1, 1, 1, 1], {0: 1, 1: 6})  # fg peak at position 1, bg peak at 6


@pytest.mark.parametrize("scheme,expected", [
    ("a", "++++----"),  # the decision boundary: all fg-component candidates
    ("b", "++????--"),  # prefix to the fg peak; negatives from the bg peak on; ignore in between
    ("c", "++------"),  # prefix to the fg peak; all others negative
    ("d", "++??----"),  # prefix; the rest of the fg component ignored; bg component negative
])
def test_schemes_on_bimodal_set(scheme, expected):
    fit, valid = hand_fit(*BIMODAL, n_pad=3)
    for edge in ("official", "mmdet"):  # on a clean bimodal set both conventions agree
        pos, ignore = separate(fit, valid, PAAConfig(separation=scheme, edge_cases=edge))
        assert labels(pos, ignore)[:8] == expected
        assert not (pos | ignore)[0, 8:].any()  # padding is never labelled


def test_wide_fg_component_covering_both_tails():
    # REFERENCE_NOTES 1.5: sorted candidates whose fg component holds both tails, fg peak at position 10.
    comps = [0, 0] + [1] * 8 + [0, 0, 0, 0]
    fit, valid = hand_fit(comps, {0: 10, 1: 5})
    pos, ignore = separate(fit, valid, PAAConfig(separation="c", edge_cases="official"))
    assert labels(pos, ignore) == "+" * 11 + "---"  # the prefix takes 8 bg-component candidates
    pos, ignore = separate(fit, valid, PAAConfig(separation="c", edge_cases="mmdet"))
    assert labels(pos, ignore) == "++--------+---"  # fg-only prefix: positions 0, 1 and 10


@pytest.mark.parametrize("scheme", list("abcd"))
def test_single_candidate(scheme):
    fit, valid = hand_fit([0], {0: 0}, n_pad=2)
    pos, ignore = separate(fit, valid, PAAConfig(separation=scheme, edge_cases="official"))
    assert labels(pos, ignore) == "+--"
    pos, ignore = separate(fit, valid, PAAConfig(separation=scheme, edge_cases="mmdet"))
    assert labels(pos, ignore) == "---"


@pytest.mark.parametrize("scheme", list("abcd"))
def test_no_candidate_in_fg_component(scheme):
    fit, valid = hand_fit([1, 1, 1, 1], {1: 2})
    pos, ignore = separate(fit, valid, PAAConfig(separation=scheme, edge_cases="official"))
    assert labels(pos, ignore) == "++++"  # "treat all samples as positive for high recall"
    pos, ignore = separate(fit, valid, PAAConfig(separation=scheme, edge_cases="mmdet"))
    assert labels(pos, ignore) == "----"


def test_fnp_and_fsr():
    s = torch.tensor([[0.1, 0.5, 1.0, 1.5, 2.0, 0.0]])
    v = torch.tensor([[True] * 5 + [False]])
    pos, ignore, fit = split_candidates(s, v, PAAConfig(fnp=3))
    assert labels(pos, ignore) == "+++---" and fit is None
    pos, _, _ = split_candidates(s, v, PAAConfig(fnp=10))
    assert labels(pos, ignore) == "+++++-"  # never more than the candidates
    # FSR tau: exp(-score) > tau  <=>  score < -ln(tau): 0.3 -> 1.204, 0.1 -> 2.303.
    pos, _, _ = split_candidates(s, v, PAAConfig(fsr=0.3))
    assert labels(pos, ignore) == "+++---"
    pos, _, _ = split_candidates(s, v, PAAConfig(fsr=0.1))
    assert labels(pos, ignore) == "+++++-"
    pos, _, _ = split_candidates(s + 5, v, PAAConfig(fsr=0.3))
    assert not pos.any()  # a GT with no candidate in range gets no positive


def test_gmm_scheme_c_on_real_fit():
    s = torch.tensor([[0.10, 0.12, 0.15, 0.2, 2.0, 2.1, 2.2, 2.4, 2.5, 2.6]])
    v = torch.ones_like(s, dtype=torch.bool)
    pos, ignore, fit = split_candidates(s, v, PAAConfig())
    assert fit is not None and fit.means[0, 0] < 0.5 < 2.0 < fit.means[0, 1]
    assert 1 <= int(pos.sum()) <= 4 and pos[0, 0] and not pos[0, 4:].any()


def test_first_matching_low_quality_restores_own_argmax():
    # IoU (1 image, 3 GTs, 2 anchors). Anchor 1 is below 0.1 but is GT 1's best: restored to GT 1.
    # GT 2's best anchor (0) prefers GT 0: it stays with GT 0 and GT 2 gets nothing (official Matcher).
    iou = torch.tensor([[[0.3, 0.01], [0.02, 0.05], [0.04, 0.0]]])
    pairs = dense_pairs(iou)
    matched, best = first_matching(pairs, 1, 3, 2, PAAConfig())
    assert matched.tolist() == [[0, 1]] and torch.equal(best, torch.tensor([[0.3, 0.05]]))
    matched, _ = first_matching(pairs, 1, 3, 2, PAAConfig(low_quality=False))
    assert matched.tolist() == [[0, -1]]


def test_positives_are_first_matched_candidates_and_at_most_topk_per_level():
    inputs = make_inputs(random_gts(4, 5, seed=11))
    r = assign(inputs, assign_paa, PAAConfig(topk=3), ignore_iof=0.5)
    from detector.boxes import batched_box_iou

    iou = batched_box_iou(inputs.gt_boxes, inputs.anchors).masked_fill(~inputs.gt_valid[:, :, None], -1)
    best = iou.argmax(1)
    pos = r.positive
    assert torch.equal(r.matched_gt[pos], best[pos])  # a positive belongs to its own max-IoU GT
    for img in range(4):
        for g in range(inputs.gt_labels.shape[1]):
            mine = r.matched_gt[img] == g
            start = 0
            for n in inputs.num_per_level:
                assert int(mine[start:start + n].sum()) <= 3
                start += n


def test_official_and_mmdet_edge_cases_differ_only_where_documented():
    inputs = make_inputs(random_gts(6, 6, seed=12))
    off = assign(inputs, assign_paa, PAAConfig(edge_cases="official"), ignore_iof=0.5)
    mm = assign(inputs, assign_paa, PAAConfig(edge_cases="mmdet"), ignore_iof=0.5)
    assert int(mm.positive.sum()) <= int(off.positive.sum())  # mmdet never adds positives
    assert (mm.positive & ~off.positive).sum() == 0


def test_chunked_assignment_keeps_the_gmm_details(monkeypatch):
    # Assigned in chunks of one image, the PAA details (rows of every image, their GMM fits) are joined with
    # batch image indices: the summary and the records equal those of one whole-batch assignment.
    import detector.assigners as A
    from detector.methods import METHODS

    inputs = make_inputs(random_gts(5, 6, seed=7))
    paa = METHODS["paa"]
    whole = assign(inputs, assign_paa, PAAConfig(), ignore_iof=0.5)
    monkeypatch.setattr(A, "MAX_BATCH_ELEMENTS", 1)
    chunked = assign(inputs, assign_paa, PAAConfig(), ignore_iof=0.5)
    assert torch.equal(whole.details.image, chunked.details.image) and whole.details.image.max() == 4
    summary = paa.summary(whole)
    assert summary and paa.summary(chunked) == pytest.approx(summary)
    records, chunked_records = paa.records(whole, 4, seed=1), paa.records(chunked, 4, seed=1)
    assert [(r["image"], r["gt"], r["n_positives"]) for r in records["gmm_fits"]] == \
        [(r["image"], r["gt"], r["n_positives"]) for r in chunked_records["gmm_fits"]]
    for r, c in zip(records["gmm_fits"], chunked_records["gmm_fits"]):
        assert c["scores"] == pytest.approx(r["scores"]) and c["means"] == pytest.approx(r["means"])


def test_tiny_paa_run_tracks_positives_and_gmm_figures(tmp_path, workspace):
    from ablation.execution.run import RunSpec, execute
    from dashboards.run_figures import draw_run_figures

    cfg = tiny_config(
        assign={"name": "paa"}, model={"head": {"aux": "iou"}},
        loss={"reg_iou_weighted": True, "reg_weight": 1.3, "aux_weight": 0.5},
        inference={"score_fusion": "sqrt_product", "voting": {"enabled": True}},
        train={"iterations": 4, "record_every": 2, "record_gts": 3},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = execute(RunSpec(cfg, "paa", "paa"), workspace, uri)
    assert out.status == "FINISHED", out.reason
    client = MlflowClient(uri)
    run = client.get_run(out.run_id)
    for key in ("assign/pos_per_gt_mean", "assign/pos_per_gt_median", "paa/gmm_fg_mean", "paa/gmm_bg_std",
                "time/assign_s", "val/AP", "val/iou_pred_error"):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(out.run_id, "assign/pos_per_gt_mean")) == 4
    assert {a.path for a in client.list_artifacts(out.run_id, "gmm_fits")} == {
        "gmm_fits/gmm_fits_0000001.json", "gmm_fits/gmm_fits_0000002.json", "gmm_fits/gmm_fits_0000004.json"}
    drawn = draw_run_figures(uri, out.run_id, tmp_path / "figures")  # figures come after training, from the JSON
    assert (tmp_path / "figures" / "gmm_fits" / "gmm_fits_0000002.png") in drawn
    gmm = {a.path for a in client.list_artifacts(out.run_id, "gmm_fits")}
    hist = {a.path for a in client.list_artifacts(out.run_id, "positives_per_gt")}
    assert "gmm_fits/gmm_fits_0000002.png" in gmm and "gmm_fits/gmm_fits_0000002.json" in gmm
    assert "positives_per_gt/positives_per_gt_0000004.png" in hist
    assert 0.0 <= run.data.metrics["val/iou_pred_error"] <= 1.0


def test_fsr_without_any_positive_is_a_failed_run_not_a_crash(tmp_path, workspace):
    # Table 1: FSR 0.3 "training failed" (no score in range early on). exp(-score) > 0.99 needs a score
    # below 0.01, which no anchor has at initialisation: no positive, so the run must end FAILED.
    from ablation.execution.run import RunSpec, execute

    cfg = tiny_config(assign={"name": "paa", "paa": {"fsr": 0.99}},
                      train={"iterations": 6, "fail_without_positives": 3, "record_every": 0})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = execute(RunSpec(cfg, "fsr", "fsr"), workspace, uri)
    assert out.status == "FAILED"
    assert out.reason.startswith("no positive anchors for 3 iterations in a row (iterations 1-3)")
    run = MlflowClient(uri).get_run(out.run_id)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == out.reason
    assert "val/AP" not in run.data.metrics
