"""The paper's Figure 6 on real networks (Section 5; theory §7.1): effective rank of the
class-mean logits at the end of training against head depth and head width, and test accuracy
against effective rank.

The experiment is a list of *groups* `(depth, width)` of the ReLU head: `(L, fixed_width)` for
every `L` in `depths` (the depth panel) and `(fixed_depth, w)` for every `w` in `widths` (the
width panel), the shared setting once. For each data set and group, the `seeds` models (seed
`s` draws its extractor and head from `PRNGKey(s)`) train together, vmapped, by full-batch GD
(`train_full_batch`), and become one *part*: an xarray Dataset saved as
`<folder>/parts/<data>-L<depth>-w<width>-<hash>.nc` (the hash over everything that determines
its numbers), so an interrupted run resumes where it stopped. The parts assemble into one
Dataset over `(data, group, seed)` (+ `checkpoint`, `sv`, `logit`, `class`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._version import __version__
from ..core import effective_rank, singular_values
from ._data import ImageData, load_digits, load_mnist, load_npz
from ._models import EXTRACTORS, make_classifier, parameter_count, stack_models
from ._train import first_perfect_epoch, train_full_batch

if TYPE_CHECKING:  # imported where used: `import ufmflow` stays free of it
    import xarray as xr

BUNDLED = ("mnist", "digits")
PART_FORMAT = 1


class RealNetConfig(eqx.Module):
    """Every setting of the Figure 6 experiment (theory §7.1); the defaults are the full
    configuration (ResNet-20 extractor, heads of depth 1..8 and width 50..200, 5 seeds, 4,000
    epochs; meant for a GPU), `RealNetConfig.quick()` the CPU one.

    **Fields:** `data` (names: `"mnist"`, `"digits"` or paths of `.npz` files); `extractor`
    (`"resnet"` or `"mlp"`), `extractor_width`, `extractor_depth` (ResNet: base channels, blocks
    per stage; MLP: units, layers); `depths`, `fixed_width` (depth panel), `widths`,
    `fixed_depth` (width panel); `seeds`; `epochs`, `lr` (full-batch `optax.sgd`), `checkpoints`
    (evaluations during training; `epochs` must be a multiple); `test_fraction`, `split_seed`,
    `train_per_class`, `test_per_class` (the data split, `None` = all); `microbatch` (memory
    only).

    **Raises:** `ValueError` naming the field for an invalid value.
    """

    data: tuple[str, ...] = eqx.field(static=True, default=BUNDLED)
    extractor: str = eqx.field(static=True, default="resnet")
    extractor_width: int = eqx.field(static=True, default=16)
    extractor_depth: int = eqx.field(static=True, default=3)
    depths: tuple[int, ...] = eqx.field(static=True, default=tuple(range(1, 9)))
    fixed_width: int = eqx.field(static=True, default=100)
    widths: tuple[int, ...] = eqx.field(static=True, default=(50, 100, 150, 200))
    fixed_depth: int = eqx.field(static=True, default=4)
    seeds: int = eqx.field(static=True, default=5)
    epochs: int = eqx.field(static=True, default=4000)
    lr: float = eqx.field(static=True, default=0.05)
    checkpoints: int = eqx.field(static=True, default=40)
    test_fraction: float = eqx.field(static=True, default=0.2)
    split_seed: int = eqx.field(static=True, default=0)
    train_per_class: int | None = eqx.field(static=True, default=None)
    test_per_class: int | None = eqx.field(static=True, default=None)
    microbatch: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not self.data or len(set(self.data)) != len(self.data):
            raise ValueError(f"data={self.data!r}: give distinct data set names")
        for name in self.data:
            if name not in BUNDLED and not name.endswith(".npz"):
                raise ValueError(f"data={name!r}: choose mnist, digits or a path ending in .npz")
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"extractor={self.extractor!r}: choose one of "
                             f"{', '.join(EXTRACTORS)}")
        positive = dict(extractor_width=self.extractor_width,
                        extractor_depth=self.extractor_depth, fixed_width=self.fixed_width,
                        fixed_depth=self.fixed_depth, seeds=self.seeds, epochs=self.epochs,
                        checkpoints=self.checkpoints)
        for k in ("train_per_class", "test_per_class", "microbatch"):
            if getattr(self, k) is not None:
                positive[k] = getattr(self, k)
        for k, v in positive.items():
            if int(v) != v or v < 1:
                raise ValueError(f"{k}={v!r}: must be a positive integer")
        for k in ("depths", "widths"):
            v = getattr(self, k)
            if not v or any(int(x) != x or x < 1 for x in v) or len(set(v)) != len(v):
                raise ValueError(f"{k}={v!r}: give distinct positive integers")
        if self.epochs % self.checkpoints:
            raise ValueError(f"epochs={self.epochs}: must be a multiple of checkpoints="
                             f"{self.checkpoints}")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}: must be > 0")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction={self.test_fraction!r}: must be in (0, 1)")

    @classmethod
    def quick(cls, **changes) -> RealNetConfig:
        """The `--quick` configuration (a few minutes on 2 CPU cores), with `changes`."""
        return cls(**dict(QUICK, **changes))

    def to_dict(self) -> dict:
        return {f: (list(v) if isinstance(v, tuple) else v)
                for f, v in ((f, getattr(self, f)) for f in self.__dataclass_fields__)}

    def groups(self) -> list[tuple[int, int]]:
        """The `(depth, width)` heads to train: the depth panel, then the width panel's others."""
        out = [(d, self.fixed_width) for d in self.depths]
        out += [(self.fixed_depth, w) for w in self.widths if (self.fixed_depth, w) not in out]
        return out


QUICK = dict(data=BUNDLED, extractor="mlp", extractor_width=64, extractor_depth=1,
             depths=(1, 2, 3, 4, 6, 8), fixed_width=100, widths=(50, 100, 200), fixed_depth=4,
             seeds=3, epochs=600, lr=0.05, checkpoints=20, train_per_class=30,
             test_per_class=None)


def load_data(name: str, config: RealNetConfig) -> ImageData:
    """The data set `name` (`mnist`, `digits` or an `.npz` path) split as `config` says."""
    kw = dict(test_fraction=config.test_fraction, seed=config.split_seed,
              train_per_class=config.train_per_class, test_per_class=config.test_per_class)
    if name == "mnist":
        return load_mnist(**kw)
    if name == "digits":
        return load_digits(**kw)
    return load_npz(name, **kw)


def _data_label(name: str) -> str:
    return name if name in BUNDLED else Path(name).stem


def _file_sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def part_key(config: RealNetConfig, name: str, depth: int, width: int) -> str:
    """The canonical JSON of everything that determines one part's numbers."""
    c = config
    data = dict(name=name, test_fraction=c.test_fraction, split_seed=c.split_seed,
                train_per_class=c.train_per_class, test_per_class=c.test_per_class)
    if name not in BUNDLED and Path(name).is_file():
        data["sha1"] = _file_sha1(name)
    key = dict(format=PART_FORMAT, data=data,
               model=dict(extractor=c.extractor, extractor_width=c.extractor_width,
                          extractor_depth=c.extractor_depth, depth=depth, width=width),
               train=dict(seeds=c.seeds, epochs=c.epochs, lr=c.lr, checkpoints=c.checkpoints,
                          microbatch=c.microbatch, dtype="float32"))
    return json.dumps(key, sort_keys=True)


def part_path(folder: Path, config: RealNetConfig, name: str, depth: int, width: int) -> Path:
    key = part_key(config, name, depth, width)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return Path(folder) / "parts" / f"{_data_label(name)}-L{depth}-w{width}-{digest}.nc"


def _load_part(path: Path, key: str) -> xr.Dataset | None:
    from ..sweep._store import read_part

    return read_part(path, key, what="setting")


def _part_dataset(record: dict, data: ImageData, key: str, num_params: int) -> xr.Dataset:
    """One group's results over `seed` (and `checkpoint`, `sv`, `logit`, `class`)."""
    import xarray as xr

    cm = np.asarray(record["class_means"], np.float64)  # (C+1, S, K, K)
    erank_t = np.asarray(effective_rank(jnp.asarray(cm)))  # (C+1, S)
    sv = np.asarray(singular_values(jnp.asarray(cm[-1])))  # (S, K)
    final = {k: record[k][-1] for k in ("train_loss", "train_accuracy_t", "test_loss",
                                         "test_accuracy", "finite")}
    seeds = cm.shape[1]
    k = data.num_classes
    ds = xr.Dataset(
        {
            "effective_rank": ("seed", erank_t[-1]),
            "singular_values": (("seed", "sv"), sv),
            "class_mean_logits": (("seed", "logit", "class"), cm[-1]),
            "train_accuracy": ("seed", final["train_accuracy_t"].astype(np.float64)),
            "test_accuracy": ("seed", final["test_accuracy"].astype(np.float64)),
            "train_loss": ("seed", final["train_loss"].astype(np.float64)),
            "test_loss": ("seed", final["test_loss"].astype(np.float64)),
            "finite": ("seed", final["finite"].astype(np.int8)),
            "epoch_100": ("seed", first_perfect_epoch(record["train_accuracy"])),
            "effective_rank_t": (("checkpoint", "seed"), erank_t),
            "train_loss_t": (("checkpoint", "seed"), record["train_loss"].astype(np.float64)),
            "train_accuracy_t": (("checkpoint", "seed"),
                                 record["train_accuracy_t"].astype(np.float64)),
            "test_accuracy_t": (("checkpoint", "seed"),
                                record["test_accuracy"].astype(np.float64)),
            "num_params": ((), num_params),
        },
        coords=dict(seed=np.arange(seeds), checkpoint=np.arange(len(record["epoch"])),
                    epoch=("checkpoint", record["epoch"]), sv=np.arange(k),
                    logit=np.arange(k), **{"class": np.arange(k)}),
    )
    ds.attrs.update(part_key=key, ufmflow=__version__, num_train=len(data.y_train),
                    num_test=len(data.y_test))
    return ds


def run_group(config: RealNetConfig, data: ImageData, depth: int, width: int, *,
              on_chunk=None):
    """Train the `config.seeds` models of one head `(depth, width)` on `data`, vmapped over seeds
    (theory §7.1); return `(models, record, num_params)` (`train_full_batch`'s record)."""
    seeds = [make_classifier(
        jax.random.PRNGKey(s), data.image_shape, data.num_classes, extractor=config.extractor,
        extractor_width=config.extractor_width, extractor_depth=config.extractor_depth,
        head_depth=depth, head_width=width) for s in range(config.seeds)]
    num_params = parameter_count(seeds[0])
    models = stack_models(seeds)
    models, record = train_full_batch(
        models, data.x_train, data.y_train, data.x_test, data.y_test,
        num_classes=data.num_classes, epochs=config.epochs, lr=config.lr,
        checkpoints=config.checkpoints, microbatch=config.microbatch, on_chunk=on_chunk)
    return models, record, num_params


def real_network_experiment(config: RealNetConfig, folder=None, *, progress: bool = True,
                            log=None) -> xr.Dataset:
    """Run the Figure 6 experiment (theory §7.1); return its Dataset.

    **Arguments:** `config`; `folder`: where each finished group is saved as a part and found
    again on a rerun (None: nothing saved); `progress`: a tqdm bar on stderr (epochs done, ETA);
    `log(line)`: where one line per finished group goes (default stderr when `progress`).

    **Returns:** an `xarray.Dataset` over `data`, `group` (coords `depth`, `width`,
    `depth_panel`, `width_panel`), `seed`, `checkpoint` (coord `epoch`), `sv`, `logit`, `class`:
    `effective_rank` (of the class-mean logits on the training set, uncentred, theory §6.1),
    `singular_values`, `class_mean_logits`, final `train_accuracy`, `test_accuracy`,
    `train_loss`, `test_loss`, `finite`, `epoch_100` (epochs to 100% training accuracy, -1:
    never), their `_t` histories at the checkpoints, and `num_params`.

    **Raises:** `ValueError` / `FileNotFoundError` from the loaders.
    """
    from tqdm.auto import tqdm

    groups = config.groups()
    jobs = [(name, d, w) for name in config.data for d, w in groups]
    parts: dict[tuple, xr.Dataset] = {}
    if log is None:
        log = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (
            lambda line: None)
    if folder is not None:
        for job in jobs:
            found = _load_part(part_path(folder, config, *job), part_key(config, *job))
            if found is not None:
                parts[job] = found
        if parts:
            log(f"realnet: {len(parts)} of {len(jobs)} groups found in {folder}/parts; "
                "skipping them")
    todo = [job for job in jobs if job not in parts]
    cache: dict[str, ImageData] = {}
    for name in config.data:  # load (and validate) every data set before training anything
        if any(job[0] == name for job in todo):
            cache[name] = load_data(name, config)
    bar = tqdm(total=len(todo) * config.epochs, unit="epoch", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, desc="realnet")
    try:
        for name, depth, width in todo:
            data = cache[name]
            bar.set_postfix_str(f"{_data_label(name)} L={depth} w={width}")
            done = [0]

            def advance(epochs_done):
                bar.update(epochs_done - done[0])
                done[0] = epochs_done

            _, record, num_params = run_group(config, data, depth, width, on_chunk=advance)
            key = part_key(config, name, depth, width)
            part = _part_dataset(record, data, key, num_params)
            if folder is not None:
                from ..sweep._store import atomic_write_netcdf

                path = part_path(folder, config, name, depth, width)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_netcdf(part, path)
            parts[(name, depth, width)] = part
            er = part["effective_rank"].values
            log(f"realnet: {_data_label(name)} depth {depth} width {width}: effective rank "
                f"{np.nanmean(er):.3f} +- {np.nanstd(er):.3f}, train acc "
                f"{part['train_accuracy'].values.min():.3f} (min), test acc "
                f"{part['test_accuracy'].values.mean():.3f} (mean)")
    finally:
        bar.close()
    return assemble(config, parts)


def assemble(config: RealNetConfig, parts: dict) -> xr.Dataset:
    """The experiment's Dataset from its parts `{(data, depth, width): part}`."""
    import xarray as xr

    groups = config.groups()
    depth_panel = [w == config.fixed_width and d in config.depths for d, w in groups]
    width_panel = [d == config.fixed_depth and w in config.widths for d, w in groups]
    per_data = []
    for name in config.data:
        ds = xr.concat([parts[(name, d, w)].drop_attrs() for d, w in groups], dim="group",
                       join="outer", coords="minimal", compat="override")
        per_data.append(ds.expand_dims(data=[_data_label(name)]))
    out = xr.concat(per_data, dim="data", join="outer", coords="minimal", compat="override")
    out = out.assign_coords(depth=("group", [d for d, _ in groups]),
                            width=("group", [w for _, w in groups]),
                            depth_panel=("group", depth_panel), width_panel=("group", width_panel))
    out["num_train"] = ("data", [parts[(n, *groups[0])].attrs.get("num_train")
                                 for n in config.data])
    out["num_test"] = ("data", [parts[(n, *groups[0])].attrs.get("num_test")
                                for n in config.data])
    out.attrs.update(config=json.dumps(config.to_dict(), sort_keys=True), ufmflow=__version__,
                     analysis="realnet")
    return out
