"""The ensemble's arithmetic: the combination rule, fitting its weights and temperature, and honest scores of it.

The ensemble of members m = 1..M with probabilities p_m (rows sum to 1), weights w (w_m >= 0, sum w_m = 1) and a
temperature T > 0 is

    p(x) = softmax( log( sum_m w_m p_m(x) ) / T )     i.e.  p_c ∝ ( sum_m w_m p_mc )^(1/T)

a weighted average of the members' probabilities, then one temperature on its log (T > 1 softens, T < 1
sharpens; T = 1 is the plain average). `fit` chooses w and T to minimise the log loss of p on out-of-fold frames.

The optimiser is torch's L-BFGS (with a strong Wolfe line search) over unconstrained parameters: w = softmax(a)
keeps the weights non-negative and summing to 1, T = exp(b) keeps the temperature positive. Not scipy: it is no
dependency of trapcls (only the tests' tools bring it), whereas torch comes with the `train` extra, which whoever
trained the members has installed; the problem is small (M + 1 numbers), smooth and solved in milliseconds.

Scores: every log loss is trapcls.core.metrics.log_loss (the numbers `trapcls evaluate` prints); a standard error
is that of the mean of the per-frame losses. Weights fitted on the frames they are scored on are optimistic, so
`cross_fitted_losses` scores each fold's frames with weights fitted on the other folds only.
"""

from __future__ import annotations

import math

import numpy as np

from trapcls.core.metrics import LOG_LOSS_EPS, log_losses, mean_se
from trapcls.core.system.deps import require

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
MAX_ROUNDS = 20  # L-BFGS steps (each up to MAX_ITER iterations) until the loss stops moving
MAX_ITER = 200
TOLERANCE = 1e-10  # on a log loss near 1: weights and T settle to about 1e-6


def combine(probs: np.ndarray, weights: np.ndarray, temperature: float) -> np.ndarray:
    """The ensemble's probabilities (frames, classes) from the members' (members, frames, classes):
    softmax(log(sum_m w_m p_m) / T), the weighted average floored at the log loss's epsilon before the log."""
    mix = np.tensordot(np.asarray(weights, dtype=np.float64), probs, axes=1)
    logits = np.log(np.clip(mix, LOG_LOSS_EPS, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def fit(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """The weights (non-negative, summing to 1) and temperature minimising the log loss of `combine` on these frames
    (probs: members, frames, classes; labels: class indices). One member: its weight is 1 and only T is fitted."""
    torch = require("torch")
    members = probs.shape[0]
    p = torch.as_tensor(probs, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    raw = torch.zeros(members, dtype=torch.float64, requires_grad=members > 1)  # w = softmax(raw): equal to start
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t): 1 to start
    params = [log_t, raw] if members > 1 else [log_t]
    optimiser = torch.optim.LBFGS(params, lr=1, max_iter=MAX_ITER, tolerance_grad=1e-10,
                                  tolerance_change=TOLERANCE, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        mix = torch.einsum("m,mnc->nc", torch.softmax(raw, dim=0), p).clamp_min(LOG_LOSS_EPS)
        loss = torch.nn.functional.cross_entropy(torch.log(mix) * torch.exp(-log_t), y)
        loss.backward()
        return loss

    before = math.inf
    for _ in range(MAX_ROUNDS):  # L-BFGS may stop at max_iter short of the optimum: go on until it stops moving
        loss = optimiser.step(closure).item()
        if abs(before - loss) <= TOLERANCE:
            break
        before = loss
    with torch.no_grad():
        return torch.softmax(raw, dim=0).numpy().copy(), float(torch.exp(log_t))


def cross_fitted_losses(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each frame's log loss under weights and temperature fitted on the other folds' frames only: an estimate of
    the ensemble's loss on frames its weights never saw."""
    losses = np.empty(len(labels), dtype=np.float64)
    for fold in np.unique(folds):
        held = folds == fold
        weights, temperature = fit(probs[:, ~held], labels[~held])
        losses[held] = log_losses(combine(probs[:, held], weights, temperature), labels[held])
    return losses


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """a - b frame by frame: the mean difference, its standard error and 95% interval (normal approximation)."""
    mean, se = mean_se(a - b)
    return {"difference": mean, "se": se, "low": mean - Z95 * se, "high": mean + Z95 * se}
