"""The analyses of `python -m ufmflow.landscape` and their typed keys (`Key`): defaults, `quick=1`
sizes and bounds. Pure Python: parsing never imports JAX."""

from __future__ import annotations

from ._analysis import Analysis, common_keys
from ._analysis import analysis as _analysis
from ._grammar import Key

_GD = "paper GD protocol (method gd): "
_RUN_KEYS = [
    Key("width", "int", None, "feature width d of the deep UFMs", ge=2),
    Key("scale", "real", None, "Gaussian init scale eps (entries N(0, eps^2/d))", gt=0),
    Key("lr", "real", None, _GD + "learning rate", gt=0),
    Key("epochs", "int", None, _GD + "total epochs", ge=1),
    Key("weight_decay", "real", None, _GD + "weight decay of the first decay_epochs", ge=0),
    Key("decay_epochs", "int", None, _GD + "epochs with weight decay (then unregularized)",
        ge=0),
]
_RUN_DEFAULTS = dict(width=16, scale=0.7, lr=0.05, epochs=100_000, weight_decay=1e-3,
                     decay_epochs=20_000)
_RTOL = Key("rtol", "real", None, "numerical rank: singular values > rtol * sigma_1 (rank 2 "
            "iff sigma_3/sigma_1 < rtol)", gt=0, lt=1)

ANALYSES: dict[str, Analysis] = {a.name: a for a in [
    _analysis(
        "map", "Theorem 3.1 map: the best candidate structure over (K, real depth) and the "
        "transition depth L*(K)",
        [Key("K", "ints", None, "class counts K >= 3", ge=3),
         Key("depth_max", "real", None, "largest depth of the grid", gt=1),
         Key("depth_step", "real", None, "step of the real depth grid 1, 1+step, ...", gt=0)],
        dict(K=tuple(range(3, 65)), depth_max=16.0, depth_step=0.05),
        dict(K=tuple(range(3, 17)), depth_step=0.25),
        "_landscape_runs:run_map", note="(closed forms: a few seconds)"),
    _analysis(
        "optima", "numerical max-margin solutions: distinct local optima and their frequencies "
        "vs depth",
        [Key("K", "int", None, "number of classes K >= 3", ge=3),
         Key("depth", "ints", None, "integer depths L >= 1", ge=1),
         Key("num", "int", None, "random starts per depth", ge=1),
         Key("outer", "int", None, "augmented-Lagrangian multiplier updates", ge=1),
         Key("inner", "int", None, "Adam steps per multiplier update", ge=1)],
        dict(K=5, depth=(1, 2, 3, 5, 8), num=256, outer=50, inner=200),
        dict(K=4, depth=(1, 3), num=16),
        "_landscape_runs:run_optima",
        note="(the defaults: 224 s wall on 2 shared CPU cores, measured under load)"),
    _analysis(
        "softmax-codes", "softmax codes: max-margin geometry of a width-r single-layer UFM, "
        "K x r table",
        [Key("K", "ints", None, "class counts K >= 3", ge=3),
         Key("num", "int", None, "random starts per (K, r)", ge=1)],
        dict(K=(4, 5, 6, 7, 8), num=32), dict(K=(4, 5), num=8),
        "_landscape_runs:run_softmax_codes",
        note="(r = 2..K-1 for each K; the defaults: 398 s wall on 2 shared CPU cores, measured "
        "under load)"),
    _analysis(
        "kgon", "Theorem 3.2 / Fig. 3 left, middle: do deep runs at rank 2 form the regular "
        "K-gon?",
        [Key("K", "ints", None, "class counts K >= 3", ge=3),
         Key("depth", "int", None, "depth L of the deep UFMs", ge=1),
         Key("seeds", "int", None, "seeds per K", ge=1),
         Key("method", "choice", None, "gd (paper protocol), gf (full gradient flow "
             "solve_flow) or both", choices=("both", "gd", "gf")),
         *_RUN_KEYS,
         Key("t1", "real", None, "GF time of the full-flow runs (method gf)", gt=0),
         _RTOL],
        dict(K=tuple(range(3, 17)), depth=8, seeds=5, method="both", **_RUN_DEFAULTS, t1=1e6,
             rtol=1e-3),
        dict(K=(3, 4), depth=4, seeds=2, method="gd", width=6, lr=0.1, epochs=3000,
             decay_epochs=1000),
        "_landscape_runs:run_kgon"),
    _analysis(
        "fig3-right", "Fig. 3 right: normalized margin q/||M||_* of deep runs at rank r "
        "(averaged per rank) beside the softmax code of width r",
        [Key("K", "int", None, "number of classes K >= 3", ge=3),
         Key("depth", "ints", None, "depths L of the deep runs (deeper: lower rank)", ge=1),
         Key("width", "ints", None, "feature widths d of the deep runs", ge=2),
         Key("seeds", "int", None, "seeds per (depth, width)", ge=1),
         Key("num", "int", None, "random starts of each softmax code (r = 2..K-1)", ge=1),
         *[k for k in _RUN_KEYS if k.name != "width"], _RTOL],
        dict(K=6, depth=(1, 2, 4, 8), width=(8, 16), seeds=3, num=32,
             **{k: v for k, v in _RUN_DEFAULTS.items() if k != "width"}, rtol=1e-3),
        dict(K=4, depth=(2, 6), width=(6,), seeds=2, num=8, lr=0.1, epochs=3000,
             decay_epochs=1000),
        "_landscape_margins:run_fig3_right",
        note="(the defaults: 234 s wall on 2 shared CPU cores, measured under load)"),
    _analysis(
        "fig1", "Fig. 1: angles vs logit distances of DNC and a low-rank structure (Eq. 4)",
        [Key("K", "int", None, "number of classes (even for the cross-polytope)", ge=3),
         Key("depth", "real", None, "depth L", ge=1),
         Key("rho", "real", None, "Frobenius norm of each balanced factor", gt=0),
         Key("low_rank", "choice", None, "the low-rank structure",
             choices=("cross_polytope", "hypercube", "circle"))],
        dict(K=4, depth=4.0, rho=1.0, low_rank="cross_polytope"), {},
        "_landscape_figs:run_fig1"),
    _analysis(
        "fig7", "Fig. 7: normalized class-mean logits of converged deep UFMs, DNC beside low "
        "rank",
        [Key("K", "int", None, "number of classes", ge=3),
         Key("depth", "ints", None, "depths of the runs shown (one panel each)", ge=1),
         *_RUN_KEYS],
        dict(K=8, depth=(1, 8), **_RUN_DEFAULTS),
        dict(K=6, epochs=20_000, decay_epochs=10_000, width=8),
        "_landscape_figs:run_fig7"),
    _analysis(
        "fig8", "Fig. 8: a converged rank-2 deep UFM, classes permuted into circle order "
        "(circulant K-gon)",
        [Key("K", "int", None, "number of classes", ge=3),
         Key("depth", "int", None, "depth L", ge=1),
         Key("seeds", "int", None, "seeds tried; the first run at rank 2 is shown", ge=1),
         *_RUN_KEYS, _RTOL],
        dict(K=8, depth=8, seeds=3, **_RUN_DEFAULTS, rtol=1e-3),
        dict(K=5, seeds=2, epochs=20_000, decay_epochs=10_000, width=8),
        "_landscape_figs:run_fig8"),
]}

COMMON_KEYS: tuple[Key, ...] = common_keys(
    "run folder; default runs/<analysis>-<10-digit hash of the config>",
    "PRNGKey(seed) draws every random init and start")
