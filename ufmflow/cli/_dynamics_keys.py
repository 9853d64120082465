"""The analyses of `python -m ufmflow.dynamics` and their typed keys (`Key`): what each takes,
its default, its `quick=1` size and its bounds (the command itself: `ufmflow.cli._analysis`).
Pure Python: parsing never imports JAX."""

from __future__ import annotations

from ._analysis import Analysis, common_keys
from ._analysis import analysis as _analysis
from ._grammar import Key

_POW2 = "a power of two"


def _k_list(low: int, extra: str = "", **kw) -> Key:
    return Key("K", "ints", None, f"number of classes, {_POW2} >= {low}{extra}",
               ge=low, power_of_two=True, **kw)


def _k_one(low: int, extra: str = "") -> Key:
    return Key("K", "int", None, f"number of classes, {_POW2} >= {low}{extra}", ge=low,
               power_of_two=True)


_NUM = "random directions per (depth, scale) cell (uf.random_directions, U[0, 1] entries)"
_TAU1 = "reduced time tau at which the singular values are read"


ANALYSES: dict[str, Analysis] = {a.name: a for a in [
    _analysis(
        "critical-scale", "DNC / cross-polytope critical scale x*(K, L) (Theorem 4.3 i-ii)",
        [_k_list(4),
         Key("depth", "reals", None, "depths L (any real >= 1)", ge=1),
         Key("structure", "choice", None, "which critical scales: both, dnc or cross_polytope",
             choices=("both", "dnc", "cross_polytope"))],
        dict(K=(4, 8, 16, 32, 64, 128, 256, 512, 1024),
             depth=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0), structure="both"),
        dict(K=(4, 8, 16, 32), depth=(1.0, 1.5, 2.0, 4.0, 8.0)),
        "_dynamics_stability:run_critical_scale"),
    _analysis(
        "perturb", "DNC perturbations below / above x* along solve_hadamard trajectories",
        [_k_one(4),
         Key("depth", "real", None, "depth L > 1 (at L = 1 DNC is stable at every scale)", gt=1),
         Key("ratio", "reals", None, "scales x/x* of the perturbed structures", gt=0),
         Key("eps", "real", None, "size of the perturbation in log coordinates", gt=0, le=1)],
        dict(K=8, depth=4.0, ratio=(0.1, 0.5, 2.0, 5.0), eps=1e-4), {},
        "_dynamics_stability:run_perturb"),
    _analysis(
        "rich-get-richer", "how often the gap between two modes grows near the origin "
        "(Theorem 4.4)",
        [_k_one(4),
         Key("depth", "reals", None, "depths L >= 1", ge=1),
         Key("scale", "reals", None, "init scales ||s||", gt=0),
         Key("num", "int", None, "random inits per cell", ge=1)],
        dict(K=16, depth=(1.0, 1.5, 2.0, 4.0, 8.0), scale=(1e-3, 1e-2, 1e-1, 1.0, 10.0),
             num=512),
        dict(K=8, depth=(1.0, 2.0, 4.0), scale=(1e-2, 1.0), num=64),
        "_dynamics_hadamard:run_rich_get_richer"),
    _analysis(
        "kl", "KL to NC: depth-1 monotonicity over random inits; a diverging L > 1 path "
        "(Fig. 10)",
        [_k_one(4),
         Key("depth", "real", None, "depth L > 1 of the diverging path", gt=1),
         Key("x", "real", None, "scale of the cross-polytope mixture", gt=0),
         Key("delta", "real", None, "off-support ratio of the mixture; auto = half the "
             "divergence threshold ((K-2)/K)^(1/(alpha-1))", gt=0, none="auto"),
         Key("num", "int", None, "depth-1 random inits (scales 1e-2..1e2)", ge=1),
         Key("tau1", "real", None, "final reduced time", gt=0)],
        dict(K=8, depth=4.0, x=1.0, delta=None, num=256, tau1=1e100), dict(num=32),
        "_dynamics_hadamard:run_kl"),
    _analysis(
        "basins", "fraction of random directions ending at DNC / between / minimal rank",
        [_k_list(4),
         Key("depth", "reals", None, "depths L >= 1", ge=1),
         Key("scale", "reals", None, "init scales ||s||", gt=0),
         Key("num", "int", None, _NUM, ge=1),
         Key("tau1", "real", None, _TAU1, gt=0)],
        dict(K=(8, 16, 32), depth=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0),
             scale=(1e-2, 1e-1, 1.0, 10.0, 100.0), num=2048, tau1=1e300),
        dict(K=(8,), depth=(1.0, 2.0, 4.0), scale=(1e-2, 1.0), num=64),
        "_dynamics_hadamard:run_basins",
        note="(2048 directions per cell, K = 8, 16, 32: ~4 min on 2 CPU cores)"),
    _analysis(
        "minimal-rank", "exhaustive search for the smallest support with positive margins "
        "(Prop. C.1)",
        [_k_list(2, ", at most 16 (2^(K-1) supports)", le=16)],
        dict(K=(4, 8, 16)), dict(K=(4, 8)),
        "_dynamics_stability:run_minimal_rank"),
    _analysis(
        "effective-rank", "Fig. 9: late-time effective rank vs depth and vs init scale",
        [_k_one(4),
         Key("depth", "reals", None, "depths of the depth sweep (at depth_scale)", ge=1),
         Key("scale", "reals", None, "init scales of the scale sweep (at each scale_depth)",
             gt=0),
         Key("scale_depth", "reals", None, "depths of the scale sweep", ge=1),
         Key("depth_scale", "real", None, "init scale of the depth sweep", gt=0),
         Key("num", "int", None, _NUM, ge=1),
         Key("tau1", "real", None, _TAU1, gt=0)],
        dict(K=16, depth=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 12.0, 16.0),
             scale=(1e-2, 1e-1, 1.0, 10.0, 100.0), scale_depth=(2.0, 4.0, 8.0),
             depth_scale=1e-2, num=128, tau1=1e300),
        dict(K=8, depth=(1.0, 2.0, 4.0, 8.0), scale=(1e-2, 1.0), scale_depth=(4.0,), num=16),
        "_dynamics_hadamard:run_effective_rank"),
    _analysis(
        "width", "Theorem 4.5 / Fig. 5: ETF alignment vs width, and rank at convergence",
        [Key("K", "int", None, "number of classes (>= 2)", ge=2),
         Key("n", "int", None, "samples per class", ge=1),
         Key("depth", "int", None, "depth L (integer >= 1)", ge=1),
         Key("width", "ints", None, "widths of the initial-velocity alignment", ge=1),
         Key("scale", "reals", None, "init scales eps of the initial-velocity alignment", gt=0),
         Key("seeds", "int", None, "seeds per width", ge=1),
         Key("wide_seeds", "int", None, "seeds of the widths >= wide_width (the first ones)",
             ge=1),
         Key("wide_width", "int", None, "widths from which only wide_seeds seeds run", ge=1),
         Key("grown_width", "ints", None, "widths of the alignment after ||Z|| grew 10x "
             "(none: skip)", ge=1, none="none"),
         Key("grown_scale", "real", None, "init scale of the grown alignment", gt=0),
         Key("conv_width", "ints", None, "widths of the effective rank at t1 (none: skip)",
             ge=1, none="none"),
         Key("conv_scale", "real", None, "init scale of the effective rank at t1", gt=0),
         Key("t1", "real", None, "GF time at which the effective rank is read "
             "(\"at convergence\")", gt=0),
         Key("rtol", "real", None, "relative tolerance of the flows", gt=0, lt=1)],
        dict(K=4, n=4, depth=3, width=(16, 64, 256, 1024, 4096), scale=(0.01, 0.1, 0.5, 1.0),
             seeds=5, wide_seeds=3, wide_width=4096, grown_width=(16, 64, 256, 1024, 4096),
             grown_scale=0.1, conv_width=(8, 16, 32, 64, 128, 256, 1024, 4096), conv_scale=0.5,
             t1=1e8, rtol=1e-6),
        dict(width=(16, 64, 256), scale=(0.1,), seeds=2, grown_width=(16, 64),
             conv_width=(8, 64), t1=1e4),
        "_dynamics_width:run_width",
        note="(widths 16..4096, 3 seeds at 4096 and 5 below: ~12 min on 2 CPU cores)"),
    _analysis(
        "random-vs-hadamard", "Fig. 11: singular values from a small random init beside "
        "Hadamard",
        [_k_one(2),
         Key("depth", "int", None, "depth L (integer >= 1)", ge=1),
         Key("width", "int", None, "width of the random-init model", ge=1),
         Key("n", "int", None, "samples per class", ge=1),
         Key("scale", "real", None, "Gaussian init scale", gt=0),
         Key("t1", "real", None, "final GF time", gt=0)],
        dict(K=8, depth=4, width=32, n=1, scale=0.3, t1=1e8), dict(t1=1e6),
        "_dynamics_width:run_random_vs_hadamard"),
]}

COMMON_KEYS: tuple[Key, ...] = common_keys(
    "run folder; default runs/<analysis>-<10-digit hash of the config> (all: "
    "runs/all-<hash>, one subfolder per analysis)",
    "PRNGKey(seed) draws every random direction and init")
