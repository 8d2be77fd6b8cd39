"""Batched two-component 1-D Gaussian mixture fitted by EM, reproducing scikit-learn (PAA step 5).

PAA (Kim & Lee, ECCV 2020) fits, per GT, a 2-component GMM to the anchor scores (losses) of its
candidates. The official code runs `sklearn.mixture.GaussianMixture` per GT on CPU; here all GTs
of a batch are fitted at once, with padded candidates and an explicit mask, on any device.

Dimensions: G rows (one per GT), N padded candidates per row, K = 2 components.

The procedure is the one of `GaussianMixture(2, weights_init=[.5, .5], means_init=[[min], [max]],
precisions_init=[[[1.]], [[1.]]], covariance_type='full', tol, reg_covar, max_iter)` in
scikit-learn 1.9 (`mixture/_base.py::fit_predict`, `_gaussian_mixture.py`), row by row:

1. Initialise: component 0 at the row's minimum valid score, component 1 at its maximum, weights
   0.5 / 0.5, and variances by `init`: "official", 1 (PAA's precisions_init 1, whatever the score
   scale); "data", each component the (population) variance of the scores on its side of the
   midpoint (min + max) / 2 (ties to component 0), plus reg_covar: the variances one hard k-means
   step from the two means would give. sklearn given these as `precisions_init` (1 / variance) runs
   the same EM. (With all three `*_init` given sklearn runs no k-means.)
2. For it = 1..max_iter:
   a. E-step at the current parameters: per-component log N(x | mu, var) via the precision
      Cholesky 1/sqrt(var), plus log weight; log p(x) by log-sum-exp; log responsibilities.
      The lower bound is the mean of log p(x) over the row's valid samples.
   b. M-step: nk = sum resp + 10 eps(dtype); mean = resp-weighted mean / nk; variance = resp-
      weighted *centred* squares / nk + reg_covar; weight = nk / sum(nk) (sum(nk) = n + 20 eps).
   c. n_iter = it; if |lower bound - previous lower bound| < tol the row has converged and keeps
      the parameters of this M-step (one M-step after the likelihood stalled), else continue.
      The first iteration never converges (previous bound = -inf).
3. A final E-step at the kept parameters gives `predict` (argmax, ties -> 0) and
   `score_samples` (log p(x)), what sklearn's `fit(x)` then `predict(x)` return; a tie is any
   posterior difference within `LOG_TIE` (rounding), where sklearn's own answer is rounding noise.

Rows are independent: a converged row is frozen (its parameters, n_iter and flags no longer
change) while the others continue, so each row equals its own sklearn fit. The Python loop is
over EM iterations only; "how many rows are still iterating?" costs one host sync every
`check_every` iterations, and checking later never changes a result (frozen rows stay frozen).
Once half of the iterating rows are done, the finished ones leave the working set.

Deviations from sklearn (cases where sklearn raises instead of returning a fit):
* 1 valid candidate: EM runs unchanged. Both components start and stay on the value:
  means = value, variances = reg_covar, weights 0.5 / 0.5, posteriors 0.5 / 0.5, component 0
  predicted, n_iter 3, converged. This is exactly what sklearn returns for n >= 2 identical
  values, so a singleton behaves like a row of identical scores.
* 0 valid candidates: no EM. means 0, variances 1, weights 0.5 (the initial state), n_iter 0,
  converged True, posteriors 0, log_density -inf, predict -1.
* max_iter must be >= 1 (sklearn's max_iter=0 path fails with precisions_init given).
Valid scores must be finite (the official code asserts no NaN); padded entries may hold anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from detector.config.assign_sections import GMM_INITS  # public here too

LOG_2PI = math.log(2 * math.pi)
EPS_FACTOR = 10  # sklearn adds 10 * finfo(dtype).eps to every nk
# Two log-probabilities within this of each other are tied: a sample's two log posteriors (then `predict`
# gives component 0, as sklearn's argmax on an exact tie), or two candidates' log densities (PAA's peak is
# then the first). Such ties are rounding, not data: when both components coincide (near-identical scores)
# the posteriors differ by ~1e-13 in float64, and which side rounding falls on differs between
# implementations and versions. Below float32's resolution: a float32 fit has only exact ties.
LOG_TIE = 1e-9


@dataclass
class GMMFit:
    means: Tensor  # (G, 2)
    variances: Tensor  # (G, 2) reg_covar included, as sklearn's covariances_
    weights: Tensor  # (G, 2)
    posteriors: Tensor  # (G, N, 2) responsibilities at the final parameters, 0 on invalid entries
    log_density: Tensor  # (G, N) mixture log-density log p(x) (sklearn score_samples), -inf on invalid
    n_iter: Tensor  # (G,) long, EM iterations run (sklearn n_iter_), 0 for empty rows
    converged: Tensor  # (G,) bool (sklearn converged_), True for empty rows
    valid: Tensor  # (G, N) bool, the mask the fit was computed with

    def predict(self) -> Tensor:
        """(G, N) long component index: 1 where log p1 - log p0 > `LOG_TIE`, else 0 (argmax of the
        posteriors, ties -> 0 as sklearn's); -1 on invalid."""
        comp = (self.posteriors[..., 1] > self.posteriors[..., 0] * (1.0 + LOG_TIE)).long()
        return torch.where(self.valid, comp, torch.full_like(comp, -1))


def _e_step(x: Tensor, valid_f: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
    """(G,N,1) samples, (G,N,1) 0/1 mask, params (3,G,2) = means, variances, weights ->
    log weighted densities log w_k N(x | mu_k, var_k) (G,N,2) and mixture log-density log p(x) (G,N)."""
    means, variances, weights = params
    prec_chol = variances.rsqrt()  # sklearn: inverse Cholesky factor of the 1x1 covariance
    const = torch.log(prec_chol).add_(torch.log(weights)).sub_(0.5 * LOG_2PI).unsqueeze(1)
    y = (x * prec_chol.unsqueeze(1)).sub_((means * prec_chol).unsqueeze(1))
    weighted = y.square_().mul_(-0.5).add_(const)
    a, b = weighted[..., 0], weighted[..., 1]  # log-sum-exp of two terms (torch.logsumexp costs 10x more here)
    hi = torch.maximum(a, b)
    return weighted, torch.minimum(a, b).sub_(hi).exp_().log1p_().add_(hi)


def _m_step(x: Tensor, resp: Tensor, reg_covar: float) -> Tensor:
    """(G,N,1) samples, (G,N,2) responsibilities (0 on invalid) -> params (3,G,2)."""
    nk = resp.sum(1).add_(EPS_FACTOR * torch.finfo(resp.dtype).eps)
    means = (resp * x).sum(1).div_(nk)
    diff = (x - means.unsqueeze(1)).square_()
    variances = (resp * diff).sum(1).div_(nk).add_(reg_covar)
    return torch.stack([means, variances, nk / nk.sum(-1, keepdim=True)])


def _data_variances(x: Tensor, valid: Tensor, lo: Tensor, hi: Tensor, reg_covar: float) -> Tensor:
    """(G,N,1) samples, (G,N) mask, row min / max (G,) -> (G,2) variance of each side of the midpoint + reg_covar."""
    upper = valid & (x[..., 0] > ((lo + hi) / 2).unsqueeze(1))
    sides = torch.stack([valid & ~upper, upper], 2).to(x.dtype)  # (G, N, 2) hard responsibilities
    count = sides.sum(1).clamp_(min=1)
    mean = (sides * x).sum(1).div_(count)
    return (sides * (x - mean.unsqueeze(1)).square_()).sum(1).div_(count).add_(reg_covar)


@torch.no_grad()
def fit_gmm(
    scores: Tensor,
    valid: Tensor,
    tol: float = 1e-3,
    max_iter: int = 100,
    reg_covar: float = 1e-6,
    dtype: torch.dtype | None = None,
    init: str = "official",
    *,
    check_every: int = 1,
) -> GMMFit:
    """Fit one 2-component 1-D GMM per row of `scores` over its valid entries, as sklearn would.

    Args:
        scores: (G, N) float, candidate scores; entries where `valid` is False are ignored.
        valid: (G, N) bool, which entries are candidates (any positions, not only a prefix).
        tol, max_iter, reg_covar: sklearn's `GaussianMixture` arguments (PAA uses the defaults).
        dtype: computation and output dtype, float32 or float64; default: `scores.dtype` when it
            is one of those, else float32. sklearn's eps in the M-step follows this dtype.
        init: the initial variances, "official" (1) or "data" (step 1 of the module doc).
        check_every: iterations between host syncs for the early exit; never changes a result.
    Returns:
        GMMFit; component 0 starts at the row minimum (PAA's foreground component).
    """
    if scores.dim() != 2 or valid.shape != scores.shape or valid.dtype != torch.bool:
        raise ValueError(f"scores (G, N) float and valid (G, N) bool expected, got {tuple(scores.shape)} "
                         f"{scores.dtype} and {tuple(valid.shape)} {valid.dtype}")
    if max_iter < 1 or check_every < 1:
        raise ValueError(f"max_iter and check_every must be >= 1, got {max_iter} and {check_every}")
    if dtype is None:
        dtype = scores.dtype if scores.dtype in (torch.float32, torch.float64) else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if init not in GMM_INITS:
        raise ValueError(f"init '{init}' is not one of {', '.join(GMM_INITS)}")
    num_cols = scores.shape[1]
    if num_cols == 0:  # one masked column keeps the reductions below well defined
        scores, valid = scores.new_zeros(scores.shape[0], 1), valid.new_zeros(valid.shape[0], 1)
    x = torch.where(valid, scores.to(dtype), 0)
    if not bool(torch.where(valid, torch.isfinite(x), True).all()):
        raise ValueError("fit_gmm: valid scores must be finite")

    n = valid.sum(1)
    active = n > 0
    valid_f = valid.to(dtype).unsqueeze(-1)
    inv_n = 1.0 / n.clamp(min=1).to(dtype)
    x3 = x.unsqueeze(-1)
    inf = torch.tensor(math.inf, dtype=dtype, device=x.device)
    lo = torch.where(valid, x, inf).amin(1)
    hi = torch.where(valid, x, -inf).amax(1)
    means = torch.where(active.unsqueeze(1), torch.stack([lo, hi], 1), 0)
    variances = _data_variances(x3, valid, lo, hi, reg_covar) if init == "data" else torch.ones_like(means)
    variances = torch.where(active.unsqueeze(1), variances, 1.0)
    params = torch.stack([means, variances, torch.full_like(means, 0.5)])  # (3, G, 2)
    n_iter = torch.zeros_like(n)
    converged = ~active
    # The working set: rows still iterating. Finished rows are frozen, so they leave it (and are written
    # back) once at least half of it is done: the last iterations, which follow the slowest few GTs,
    # then run on a few rows.
    rows = torch.arange(len(n), device=x.device)
    w_x, w_valid, w_inv_n, w_params = x3, valid_f, inv_n, params
    w_active, w_n_iter, w_converged = active, n_iter, converged
    w_prev = torch.full_like(lo, -math.inf)

    # Few, mostly in-place operations per iteration: on small (G, N) the cost is per operation, not per element.
    for it in range(1, max_iter + 1):
        weighted, log_density = _e_step(w_x, w_valid, w_params)
        lower_bound = (log_density * w_valid[..., 0]).sum(1).mul_(w_inv_n)  # mean log p(x) over valid samples
        resp = weighted.sub_(log_density.unsqueeze(-1)).exp_().mul_(w_valid)
        w_params = torch.where(w_active.view(1, -1, 1), _m_step(w_x, resp, reg_covar), w_params)
        w_n_iter = w_n_iter + w_active
        done = w_active & ((lower_bound - w_prev).abs_() < tol)
        w_converged = w_converged | done
        w_active = w_active & ~done
        w_prev = lower_bound
        if it % check_every == 0:
            n_active = int(w_active.sum())
            if n_active == 0:
                break
            if 2 * n_active <= len(rows):
                params[:, rows], n_iter[rows], converged[rows] = w_params, w_n_iter, w_converged
                keep = w_active.nonzero().squeeze(1)
                rows = rows[keep]
                w_x, w_valid, w_inv_n, w_params = w_x[keep], w_valid[keep], w_inv_n[keep], w_params[:, keep]
                w_active, w_n_iter, w_converged, w_prev = w_active[keep], w_n_iter[keep], w_converged[keep], w_prev[keep]
    params[:, rows], n_iter[rows], converged[rows] = w_params, w_n_iter, w_converged

    weighted, log_density = _e_step(x3, valid_f, params)
    posteriors = weighted.sub_(log_density.unsqueeze(-1)).exp_().mul_(valid_f)
    log_density = torch.where(valid, log_density, -inf)
    if num_cols == 0:
        posteriors, log_density, valid = posteriors[:, :0], log_density[:, :0], valid[:, :0]
    means, variances, weights = params
    return GMMFit(means, variances, weights, posteriors, log_density, n_iter, converged, valid)
