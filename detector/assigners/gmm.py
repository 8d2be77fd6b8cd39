"""Batched two-component 1-D Gaussian mixture fitted by EM, reproducing scikit-learn (PAA step 5).

PAA (Kim & Lee, ECCV 2020) fits, per GT, a 2-component GMM to the anchor scores (losses) of its
candidates. The official code runs `sklearn.mixture.GaussianMixture` per GT on CPU; here all GTs
of a batch are fitted at once, with padded candidates and an explicit mask, on any device.

Dimensions: G rows (one per GT), N padded candidates per row, K = 2 components.

The procedure is the one of `GaussianMixture(2, weights_init=[.5, .5], means_init=[[min], [max]],
precisions_init=[[[1.]], [[1.]]], covariance_type='full', tol, reg_covar, max_iter)` in
scikit-learn 1.9 (`mixture/_base.py::fit_predict`, `_gaussian_mixture.py`), row by row:

1. Initialise: component 0 at the row's minimum valid score, component 1 at its maximum,
   precisions 1, weights 0.5 / 0.5. (With all three `*_init` given sklearn runs no k-means.)
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
   `score_samples` (log p(x)), exactly what sklearn's `fit(x)` then `predict(x)` return.

Rows are independent: a converged row is frozen (its parameters, n_iter and flags no longer
change) while the others continue, so each row equals its own sklearn fit. The Python loop is
over EM iterations only; "are all rows done?" costs one host sync every `check_every`
iterations, and checking later never changes a result (frozen rows stay frozen).

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

LOG_2PI = math.log(2 * math.pi)
EPS_FACTOR = 10  # sklearn adds 10 * finfo(dtype).eps to every nk


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
        """(G, N) long component index (argmax of posteriors, ties -> 0 as sklearn); -1 on invalid."""
        comp = (self.posteriors[..., 1] > self.posteriors[..., 0]).long()
        return torch.where(self.valid, comp, torch.full_like(comp, -1))


def _e_step(x: Tensor, valid: Tensor, n: Tensor, means: Tensor, variances: Tensor, weights: Tensor):
    """(G,N) samples, (G,2) params -> mean log p(x) (G,), log resp (G,N,2), log p(x) (G,N)."""
    prec_chol = 1.0 / torch.sqrt(variances)  # sklearn: inverse Cholesky factor of the 1x1 covariance
    y = x.unsqueeze(-1) * prec_chol.unsqueeze(1) - (means * prec_chol).unsqueeze(1)
    weighted = -0.5 * (LOG_2PI + y * y) + (torch.log(prec_chol) + torch.log(weights)).unsqueeze(1)
    hi, lo = weighted.amax(-1), weighted.amin(-1)
    log_density = hi + torch.log1p(torch.exp(lo - hi))
    log_resp = weighted - log_density.unsqueeze(-1)
    lower_bound = torch.where(valid, log_density, 0).sum(1) / n.clamp(min=1)
    return lower_bound, log_resp, log_density


def _m_step(x: Tensor, valid: Tensor, log_resp: Tensor, reg_covar: float):
    """(G,N) samples, (G,N,2) log resp -> means, variances, weights, each (G,2)."""
    resp = torch.where(valid.unsqueeze(-1), torch.exp(log_resp), 0)
    nk = resp.sum(1) + EPS_FACTOR * torch.finfo(resp.dtype).eps
    means = (resp * x.unsqueeze(-1)).sum(1) / nk
    diff = x.unsqueeze(-1) - means.unsqueeze(1)
    variances = (resp * diff * diff).sum(1) / nk + reg_covar
    weights = nk / nk.sum(-1, keepdim=True)
    return means, variances, weights


@torch.no_grad()
def fit_gmm(
    scores: Tensor,
    valid: Tensor,
    tol: float = 1e-3,
    max_iter: int = 100,
    reg_covar: float = 1e-6,
    dtype: torch.dtype | None = None,
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
    num_cols = scores.shape[1]
    if num_cols == 0:  # one masked column keeps the reductions below well defined
        scores, valid = scores.new_zeros(scores.shape[0], 1), valid.new_zeros(valid.shape[0], 1)
    x = torch.where(valid, scores.to(dtype), 0)
    if not bool(torch.where(valid, torch.isfinite(x), True).all()):
        raise ValueError("fit_gmm: valid scores must be finite")

    n = valid.sum(1)
    active = n > 0
    inf = torch.tensor(math.inf, dtype=dtype, device=x.device)
    lo = torch.where(valid, x, inf).amin(1)
    hi = torch.where(valid, x, -inf).amax(1)
    means = torch.where(active.unsqueeze(1), torch.stack([lo, hi], 1), 0)
    variances = torch.ones_like(means)
    weights = torch.full_like(means, 0.5)
    n_iter = torch.zeros_like(n)
    converged = ~active
    prev = torch.full_like(lo, -math.inf)

    for it in range(1, max_iter + 1):
        lower_bound, log_resp, _ = _e_step(x, valid, n, means, variances, weights)
        new_means, new_vars, new_weights = _m_step(x, valid, log_resp, reg_covar)
        upd = active.unsqueeze(1)
        means = torch.where(upd, new_means, means)
        variances = torch.where(upd, new_vars, variances)
        weights = torch.where(upd, new_weights, weights)
        n_iter = torch.where(active, it, n_iter)
        done = active & ((lower_bound - prev).abs() < tol)
        converged = converged | done
        active = active & ~done
        prev = lower_bound
        if it % check_every == 0 and not bool(active.any()):
            break

    _, log_resp, log_density = _e_step(x, valid, n, means, variances, weights)
    posteriors = torch.where(valid.unsqueeze(-1), torch.exp(log_resp), 0)
    log_density = torch.where(valid, log_density, -inf)
    if num_cols == 0:
        posteriors, log_density, valid = posteriors[:, :0], log_density[:, :0], valid[:, :0]
    return GMMFit(means, variances, weights, posteriors, log_density, n_iter, converged, valid)
