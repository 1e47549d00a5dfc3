"""Scaffolding shared by the experiment scripts: command line, data, statistics over seeds, and
the claim's report (:class:`Report`: tables, checks, verdict, figures). The models over seeds
(init, LSUV, measurement, training) are in ``_train``.

Every script is ``python experiments/NAME.py [--quick] [--seeds N] [--out DIR]`` and exposes
``main(argv) -> dict``. A run prints a table, writes ``NAME.md`` (with a ``claim held: yes/no``
line), ``NAME.json`` (the returned summary) and PNG figures into ``--out``.

The scripts that read images (claims 5-8) also take ``--data {auto,fashion-mnist,digits}`` and
``--data-dir DIR``; :func:`load_data` picks the data set. Their claims are about Fashion-MNIST,
which is not bundled: ``auto`` uses it when :mod:`jaxinit.data` finds it (``--data-dir``, then
``$JAXINIT_DATA/fashion-mnist/``, then ``/usr/share/datasets/fashion-mnist/``) and otherwise,
with ``--quick`` only, falls back to scikit-learn's bundled digits (:func:`digits_split`), saying
so in one line. The data set used is recorded as ``"data"`` in the summary and in the markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jaxinit.data import Dataset

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
MAX_PNG_BYTES = 300_000
DATA = ("auto", "fashion-mnist", "digits")  # --data
LABELS = {"fashion-mnist": "Fashion-MNIST", "digits": "scikit-learn's digits"}
DIGITS_TEST = 500  # of the 1,797 digits; the other 1,297 are the training set

# Run from a clone without installing: the scripts use the repository's own jaxinit.
if (HERE.parent / "jaxinit" / "__init__.py").is_file() and str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 1")
    return value


def _min_seeds(minimum: int):
    def parse(text: str) -> int:
        value = _positive_int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{value} seeds cannot give a spread; use --seeds >= {minimum}"
            )
        return value

    return parse


def parser(
    description: str,
    *,
    seeds: int,
    quick_seeds: int,
    data: bool = False,
    min_seeds: int = 2,
) -> argparse.ArgumentParser:
    """The common command line; scripts add their own flags to the returned parser.

    Args:
      description: The claim the script tests (shown by ``--help``).
      seeds: Default number of seeds of the full run.
      quick_seeds: Default number of seeds with ``--quick``.
      data: Whether the script reads images (adds ``--data`` and ``--data-dir``, see
        :func:`load_data`).
      min_seeds: Smallest accepted ``--seeds`` (2 so that a spread exists).
    """
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small, fast run (under a minute on 2 CPU cores; {quick_seeds} seeds by default)",
    )
    p.add_argument(
        "--seeds",
        type=_min_seeds(min_seeds),
        default=None,
        help=f"number of random seeds (default {seeds}, or {quick_seeds} with --quick)",
    )
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help=f"output folder for the markdown, JSON and figures (default {RESULTS})",
    )
    if data:
        p.add_argument(
            "--data",
            choices=DATA,
            default="auto",
            help="the images: fashion-mnist (the claim's data set), digits (scikit-learn's "
            "bundled 8x8 digits), or auto (default): Fashion-MNIST where it is found, else "
            "digits with --quick (a full run on auto needs Fashion-MNIST)",
        )
        p.add_argument(
            "--data-dir",
            type=pathlib.Path,
            default=None,
            help="folder with the Fashion-MNIST IDX files; when given, the only folder searched "
            "(and no fallback to digits). Default: each $JAXINIT_DATA folder's fashion-mnist/, "
            "then /usr/share/datasets/fashion-mnist/ (unless JAXINIT_DATA_ONLY=1); see "
            "jaxinit.data",
        )
    p.set_defaults(_seeds_full=seeds, _seeds_quick=quick_seeds)
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (None: ``sys.argv[1:]``) and fill in the defaults that depend on --quick."""
    given = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(given)
    # The command as run, without --out/--data-dir (machine-specific), for the markdown.
    shown, skip = [], False
    for a in given:
        if skip:
            skip = False
            continue
        if a in ("--out", "--data-dir"):
            skip = True
            continue
        if not a.startswith(("--out=", "--data-dir=")):
            shown.append(a)
    args.command = " ".join(shown)
    if args.seeds is None:
        args.seeds = args._seeds_quick if args.quick else args._seeds_full
    if args.out is None:
        args.out = RESULTS
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} exists and is not a folder")
    if getattr(args, "data_dir", None) is not None:
        if args.data == "digits":
            p.error("--data-dir is where Fashion-MNIST is; --data digits needs no folder")
        if not args.data_dir.is_dir():
            p.error(f"--data-dir {args.data_dir} is not a folder")
    args.out.mkdir(parents=True, exist_ok=True)
    return args


class Data(NamedTuple):
    """The images a script runs on (:func:`load_data`).

    Attributes:
      name: ``"fashion-mnist"`` or ``"digits"``, recorded as ``"data"`` in the summary.
      train: The training set (:class:`jaxinit.data.Dataset`).
      test: The test set, disjoint from ``train``.
      note: One sentence for the markdown: the data set, its split and why it was used.
    """

    name: str
    train: Dataset
    test: Dataset
    note: str

    @property
    def label(self) -> str:
        """The data set's name for titles and tables."""
        return LABELS[self.name]


def digits_split() -> tuple[Dataset, Dataset]:
    """scikit-learn's digits (1,797 8x8 images, no split of their own) as fixed, disjoint train
    (1,297) and test (500) sets: one permutation from ``numpy.random.default_rng(0)``, the test
    set its first 500 indices. Both sets keep the permuted order, so a prefix mixes the classes.
    """
    from jaxinit import data

    ds = data.digits()
    perm = np.random.default_rng(0).permutation(ds.x.shape[0])
    test, train = perm[:DIGITS_TEST], perm[DIGITS_TEST:]
    return (
        ds._replace(x=ds.x[train], y=ds.y[train], name="digits/train"),
        ds._replace(x=ds.x[test], y=ds.y[test], name="digits/test"),
    )


def _digits(note: str) -> Data:
    train, test = digits_split()
    split = f"8x8, fixed split of {train.x.shape[0]:,} train / {test.x.shape[0]} test images"
    return Data("digits", train, test, f"scikit-learn's digits ({split}); {note}")


def load_data(args: argparse.Namespace) -> Data:
    """The training and test images chosen by ``--data`` (see the module docstring).

    ``auto`` falls back to digits only with ``--quick`` and no ``--data-dir``, printing one line
    that names the folders searched and how to get Fashion-MNIST. A full run on digits
    (``--data digits``) prints that the published claim is about Fashion-MNIST. A missing or
    corrupt Fashion-MNIST, when it is needed, ends the script with the loader's message (exit
    status 1), which says how to get the data.
    """
    from jaxinit import data

    data_dir = getattr(args, "data_dir", None)
    if args.data == "digits":
        if args.quick:
            return _digits("chosen with --data digits.")
        print(
            "note: a full run on scikit-learn's digits (--data digits); the published claim is "
            "about Fashion-MNIST."
        )
        return _digits("chosen with --data digits: the published claim is about Fashion-MNIST.")
    try:
        found = data.available("fashion-mnist", data_dir=data_dir)
        searched = data.search_dirs("fashion-mnist", data_dir)
    except ValueError as err:  # a bad JAXINIT_DATA_ONLY
        raise SystemExit(f"error: {err}") from err
    if not found and args.data == "auto" and args.quick and data_dir is None:
        where = ", ".join(str(d) for d in searched) or (
            f"no folder: {data.ENV_DIRS} is empty and {data.ENV_ONLY}=1"
        )
        print(
            f"Fashion-MNIST not found ({where}); --quick falls back to scikit-learn's digits. "
            "For the full data: apt-get install dataset-fashion-mnist, or set "
            f"{data.ENV_DIRS} to a folder holding fashion-mnist/."
        )
        return _digits(f"the --quick fallback: Fashion-MNIST was not found ({where}).")
    try:
        train = data.fashion_mnist("train", data_dir=data_dir)
        test = data.fashion_mnist("test", data_dir=data_dir)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err} (data_dir= is --data-dir here.)") from err
    except data.IDXError as err:
        raise SystemExit(f"error: {err}") from err
    note = f"{train.x.shape[0]:,} train / {test.x.shape[0]:,} test images, 28x28."
    return Data("fashion-mnist", train, test, f"Fashion-MNIST ({note})")


def probe_count(data: Data) -> int:
    """Held-out images kept for per-layer statistics: the first 512 of the test set, or half
    of a smaller one; the rest are for accuracy (:func:`images`)."""
    return min(512, data.test.x.shape[0] // 2)


class Images(NamedTuple):
    """The arrays of a train-and-score experiment (:func:`images`)."""

    x_train: Any
    y_train: Any
    x_lsuv: Any  # 512 training images for LSUV
    x_probe: Any  # held-out images for per-layer statistics
    x_eval: Any  # other held-out images, for accuracy
    y_eval: Any


def images(data: Data, transform: Any, n_test: int, seed: int) -> Images:
    """``data`` standardized with the training set's mean and std, then ``transform``ed
    (NumPy, ``(n, h, w, c) -> (n, h', w', c)``); 512 training images drawn with
    ``numpy.random.default_rng(seed)`` for LSUV; the test set split into :func:`probe_count`
    images for statistics and the next ``n_test`` for accuracy."""
    mu, sd = data.train.x.mean(), data.train.x.std()

    def prep(x):
        return jnp.asarray(transform((x - mu) / sd))

    x_train, x_test = prep(data.train.x), prep(data.test.x)
    n_probe = probe_count(data)
    lsuv = np.random.default_rng(seed).choice(x_train.shape[0], 512, replace=False)
    held = slice(n_probe, n_probe + n_test)
    return Images(
        x_train,
        jnp.asarray(data.train.y),
        x_train[lsuv],
        x_test[:n_probe],
        x_test[held],
        jnp.asarray(data.test.y)[held],
    )


def pool(k: int):
    """A NumPy/JAX transform for :func:`images`: average-pool ``k`` x ``k`` blocks of pixels."""

    def transform(x):
        n, h, w, c = x.shape
        return x.reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4))

    return transform


# --------------------------------------------------------------------------- statistics


def t_quantile(n: int, level: float = 0.95) -> float:
    """Two-sided Student-t quantile for ``n`` samples (``n - 1`` degrees of freedom)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1))


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation over seeds and a 95% t-interval of the mean."""

    mean: float
    std: float
    n: int
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{fmt(self.mean)} ± {fmt(self.std)}"

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "ci95": [self.lo, self.hi]}


def spread(x: Any, level: float = 0.95) -> Spread:
    """Summary of per-seed values ``x`` (1-D); the interval is that of the mean."""
    a = np.asarray(x, np.float64).ravel()
    n = a.size
    if n == 0:
        raise ValueError("spread: no values")
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if n > 1 else 0.0
    half = t_quantile(n, level) * std / math.sqrt(n) if n > 1 else math.inf
    return Spread(mean, std, n, mean - half, mean + half)


def welch_less(a: Any, b: Any) -> float:
    """One-sided p-value of mean(a) < mean(b) by Welch's t-test.

    Computed directly (no scipy warning on constant samples): when both samples are constant
    the answer is 0 if mean(a) < mean(b), else 1.
    """
    from scipy import stats

    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = a.mean() - b.mean()
    if va + vb == 0:
        return 0.0 if diff < 0 else 1.0
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return float(stats.t.cdf(diff / math.sqrt(va + vb), df))


def paired_less(a: Any, b: Any) -> float:
    """One-sided p-value of mean(a - b) < 0 for paired samples (one-sample t-test on the
    differences); 0 or 1 when the differences are all equal."""
    from scipy import stats

    d = np.asarray(a, np.float64).ravel() - np.asarray(b, np.float64).ravel()
    se = d.std(ddof=1) / math.sqrt(d.size)
    if se == 0:
        return 0.0 if d.mean() < 0 else 1.0
    return float(stats.t.cdf(d.mean() / se, d.size - 1))


def seed_interval(x: Any, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` range of the per-seed values themselves (empirical quantiles)."""
    a = np.asarray(x, np.float64).ravel()
    q = (1 - level) / 2
    return float(np.quantile(a, q)), float(np.quantile(a, 1 - q))


def moving_average(a: Any, window: int) -> np.ndarray:
    """Mean of each ``window`` consecutive values along the last axis (``"valid"``: the result
    is ``window - 1`` shorter)."""
    kernel = np.ones(window) / window
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, "valid"), -1, np.asarray(a))


def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table: ``g`` format, inf/nan spelled out."""
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}"
    return str(v)


# --------------------------------------------------------------------------- output


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[fmt(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(out)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: pathlib.Path, dpi: int = 90) -> pathlib.Path:
    """Save ``fig`` as a PNG, lowering the resolution until it is under 300 KB, and close it."""
    plt = pyplot()
    for d in (dpi, 72, 56, 42):
        fig.savefig(path, dpi=d, bbox_inches="tight")
        if path.stat().st_size < MAX_PNG_BYTES:
            break
    plt.close(fig)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, Spread):
        return x.as_dict()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, pathlib.Path):
        return x.name
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        v = float(x)
        return v if math.isfinite(v) else str(v)
    return x


@dataclass
class Report:
    """What a script found; :meth:`write` prints it and writes ``NAME.md`` and ``NAME.json``.

    ``data`` (scripts that read images) puts its name in the summary (``"data"``) and its note
    in the markdown."""

    name: str
    title: str
    claim: str
    source: str
    args: argparse.Namespace
    data: Data | None = None
    held: bool = False
    verdict: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)
    figures: list[pathlib.Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def table(self, heading: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        print(f"\n{heading}\n{text_table(header, rows)}")
        self.sections.append((heading, markdown_table(header, rows)))

    def checks(
        self,
        checks: dict[str, tuple[bool, str]],
        heading: str = "The claim",
        evidence: str = "numbers",
    ) -> dict[str, bool]:
        """The claim's checks as a table (check, held, ``evidence``) from
        ``{check: (held, numbers)}``; sets :attr:`held` to whether all held and returns
        ``{check: held}`` for the summary."""
        self.table(
            heading, ["check", "held", evidence], [[k, v, n] for k, (v, n) in checks.items()]
        )
        held = {k: bool(v) for k, (v, _) in checks.items()}
        self.held = all(held.values())
        return held

    def judge(self, checks: dict[str, tuple[bool, str]]) -> dict[str, bool]:
        """:meth:`checks`, and the verdict: every check, whether it held, and its numbers."""
        held = self.checks(checks)
        self.verdict = "; ".join(
            f"{k}: {'yes' if held[k] else 'NO'} ({n})" for k, (_, n) in checks.items()
        )
        return held

    def failed(self, checks: dict[str, bool], lead: str = " Failed: ") -> str:
        """``lead`` and the checks that did not hold, for a verdict; empty when all held."""
        return (
            "" if all(checks.values()) else lead + "; ".join(k for k, v in checks.items() if not v)
        )

    def text(self, heading: str, body: str) -> None:
        print(f"\n{heading}\n{body}")
        self.sections.append((heading, body))

    def figure(self, fig: Any, stem: str) -> pathlib.Path:
        path = save_figure(fig, self.args.out / f"{self.name}_{stem}.png")
        self.figures.append(path)
        return path

    def write(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        run = "quick" if self.args.quick else "full"
        lines = [
            f"# {self.title}",
            "",
            f"**Claim.** {self.claim}",
            "",
            f"**Source.** {self.source}",
            "",
            f"**Run.** `python experiments/{self.name}.py {self.args.command}`".replace(" `", "`")
            + f" ({run} run, {self.args.seeds} seeds, {seconds:.0f} s on "
            f"{os.cpu_count()} CPU cores shared with other work, jax {_jax_version()}).",
            "",
            *([f"**Data.** {self.data.note}", ""] if self.data is not None else []),
            f"**claim held: {'yes' if self.held else 'no'}** — {self.verdict}",
            "",
        ]
        for heading, body in self.sections:
            lines += [f"## {heading}", "", body, ""]
        for fig in self.figures:
            lines += [f"![{fig.stem}]({fig.name})", ""]
        (self.args.out / f"{self.name}.md").write_text("\n".join(lines))
        result = {
            "name": self.name,
            "claim": self.claim,
            "source": self.source,
            "held": bool(self.held),
            "verdict": self.verdict,
            "quick": bool(self.args.quick),
            "seeds": int(self.args.seeds),
            **({"data": self.data.name} if self.data is not None else {}),
            "seconds": round(seconds, 1),
            "figures": [f.name for f in self.figures],
            **self.summary,
        }
        (self.args.out / f"{self.name}.json").write_text(
            json.dumps(_jsonable(result), indent=1) + "\n"
        )
        print(f"\nclaim held: {'yes' if self.held else 'no'} — {self.verdict}")
        print(f"wrote {self.args.out / (self.name + '.md')} ({seconds:.1f} s)")
        result["figures"] = list(self.figures)
        return result


def _jax_version() -> str:
    import jax

    return jax.__version__
