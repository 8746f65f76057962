"""What the benchmark scripts share: options with a quick mode, thread pinning, the environment
header, interleaved timing and markdown tables.

A script describes its options with :class:`Options`, calls :func:`begin` (threads, device,
Pyro validation, header), runs its contenders through :func:`interleave` and prints with
:class:`Table` or :func:`print_comparison`. Scripts import it as ``_harness``: Python puts a
script's own folder first on ``sys.path``.
"""

import argparse
import datetime
import importlib.metadata
import itertools
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import pyro
import torch

_SAME = object()
_PACKAGES = ("torch", "pyro-ppl", "pyroext", "numpyro", "jax")  # versions in the header


class Options:
    """Command-line options whose defaults differ between a full run and ``--quick``.

    An option added with :meth:`add` takes its ``full`` default, or its ``quick`` one under
    ``--quick``; a value given on the command line wins over both. Full defaults reproduce the
    rows of ``benchmarks/RESULTS.md``; quick ones make a check of seconds.

    Arguments:
        doc: The script's docstring; its first line describes the script in ``--help``.
    """

    def __init__(self, doc: str | None) -> None:
        self.parser = argparse.ArgumentParser(description=(doc or "").partition("\n")[0])
        self.parser.add_argument(
            "--quick", action="store_true", help="small sizes, one repeat: seconds, not minutes"
        )
        self._defaults: dict[str, tuple[Any, Any]] = {}
        self._data = False

    def add(self, flag: str, *, full: Any, quick: Any = _SAME, help: str, **kwargs: Any) -> None:
        """Adds ``flag`` with its two defaults; ``kwargs`` go to ``add_argument``."""
        quick = full if quick is _SAME else quick
        shown = f"{full}" if quick == full else f"{full}; --quick: {quick}"
        action = self.parser.add_argument(flag, default=None, help=f"{help} ({shown})", **kwargs)
        self._defaults[action.dest] = (full, quick)

    def timing(self, *, steps: int, quick_steps: int, repeats: int = 3) -> None:
        """``--steps`` timed per contender and ``--repeats`` interleaved (one under --quick)."""
        self.add("--steps", full=steps, quick=quick_steps, type=int, help="timed steps")
        self.add("--repeats", full=repeats, quick=1, type=int, help="interleaved repeats")

    def threads(self, full: int) -> None:
        """``--threads``: torch (and XLA) threads; one under --quick."""
        self.add("--threads", full=full, quick=1, type=int, help="threads per process")

    def device(self) -> None:
        """``--device``; a CUDA device without CUDA makes :func:`begin` skip the script."""
        self.add("--device", full="cpu", help="torch device, e.g. cuda")

    def validation(self) -> None:
        """``--validation``: Pyro's and torch's argument checks, on as in Pyro."""
        self.add(
            "--validation",
            full=True,
            action=argparse.BooleanOptionalAction,
            help="Pyro/torch distribution argument checks",
        )

    def data(self, full: str) -> None:
        """``--data`` (the embedded 8x8 digits under --quick) and ``--data-dir``."""
        self.add(
            "--data",
            full=full,
            quick="digits",
            choices=("digits", "mnist"),
            help="images: digits, embedded 8x8, or mnist, 784 pixels from --data-dir",
        )
        self.parser.add_argument("--data-dir", help="folder holding MNIST/raw (--data mnist)")
        self._data = True

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """Parses ``argv`` (the command line by default) and fills in the defaults."""
        args = self.parser.parse_args(argv)
        for dest, (full, quick) in self._defaults.items():
            if getattr(args, dest) is None:
                setattr(args, dest, quick if args.quick else full)
        if self._data and args.data == "mnist" and args.data_dir is None:
            self.parser.error("--data mnist needs --data-dir <folder holding MNIST/raw>")
        return args


def pin_threads(threads: int) -> None:
    """Pins torch, OpenMP/MKL (inherited by child processes) and XLA to ``threads`` threads.

    Torch's default of one thread per core oversubscribes a shared machine, and a contender
    that happens to get more threads than another would win for that reason alone. XLA reads
    its flags when JAX starts its backend, so this must run before JAX is imported.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    eigen = "true" if threads > 1 else "false"
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen={eigen}"
    )
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # allowed once per process, before any inter-op work
        pass


def skip(reason: str) -> NoReturn:
    """Prints why the script measures nothing here and exits successfully."""
    print(f"# skipped: {reason}", flush=True)
    sys.exit(0)


def begin(args: argparse.Namespace, *lines: str) -> None:
    """Pins threads, checks the device, sets Pyro validation and prints the header.

    Reads ``args.threads`` (1 if absent), ``args.device`` and ``args.validation`` where the
    script has them. A CUDA device without CUDA ends the script through :func:`skip`.

    Arguments:
        args: The parsed options.
        lines: The script's own header lines (its sizes and settings), printed after the
            environment.
    """
    threads = getattr(args, "threads", 1)
    pin_threads(threads)
    device = getattr(args, "device", "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        skip(f"--device {device}, but torch finds no CUDA device")
    if hasattr(args, "validation"):
        pyro.enable_validation(args.validation)
    _quiet_known_warnings()
    for line in environment(threads, device) + list(lines):
        print(f"# {line}")
    if args.quick:
        print("# quick mode: sizes for a check that the script runs, not for RESULTS.md")
    sys.stdout.flush()


def _quiet_known_warnings() -> None:
    """Silences what torch says at every JIT trace or compile, which buries the tables."""
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated")
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\._inductor")


def environment(threads: int, device: str = "cpu") -> list[str]:
    """Lines naming the date, machine, device, threads and versions."""
    if torch.device(device).type == "cuda":
        device = f"{device} ({torch.cuda.get_device_name(device)})"
    versions = ", ".join(f"{name} {_version(name)}" for name in _PACKAGES)
    validation = "on" if pyro.infer.util.is_validation_enabled() else "off"
    return [
        f"{datetime.date.today()}; {_cpu()}; device {device}; {threads} thread(s) (torch, XLA)",
        f"Python {platform.python_version()}, {versions}; Pyro validation {validation}",
    ]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu() -> str:
    """CPU model, architecture, usable cores and memory, as far as the platform tells."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.partition(":")[2].strip() for line in cpuinfo if "model name" in line]
        model = names[0] if names else model
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = ""
    return f"{model or 'unknown CPU'} ({platform.machine()}), {cores} cores{memory}"


def synchronize(device: str | torch.device) -> None:
    """Waits for queued CUDA work, so that a clock read afterwards includes it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def loop_seconds(
    loop: Callable[[int], Any], steps: int, *, warmup: int, device: str = "cpu"
) -> tuple[float, Any]:
    """Times ``loop(steps)`` after an untimed ``loop(warmup)``.

    The warm-up pays what only the first steps cost (allocator, JIT tracing, lazy set-up).

    Returns:
        The seconds of ``loop(steps)``, CUDA work included, and what it returned.
    """
    loop(warmup)
    synchronize(device)
    start = time.perf_counter()
    result = loop(steps)
    synchronize(device)
    return time.perf_counter() - start, result


def cycle_batches[T](loader: Iterable[T], steps: int) -> Iterator[T]:
    """``steps`` batches of ``loader``, starting it again at the end of each epoch."""
    return itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), steps)


def interleave[T](contenders: Mapping[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Runs every contender once per repeat, in turn, so that a slow spell of a shared machine
    hits all of them alike.

    A contender that raises is reported on stderr with its traceback and not run again; its
    list keeps what it returned before, and the others go on.

    Returns:
        What each contender returned, one entry per repeat it completed.
    """
    results: dict[str, list[T]] = {name: [] for name in contenders}
    failed: set[str] = set()
    for _ in range(repeats):
        for name, run in contenders.items():
            if name in failed:
                continue
            try:
                results[name].append(run())
            except Exception:  # noqa: BLE001 (the report names it; the others go on)
                print(f"\n# {name} FAILED:", file=sys.stderr)
                traceback.print_exc()
                failed.add(name)
    return results


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else math.nan


def fmt(value: float, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits (whole numbers beyond them), ``—`` for NaN."""
    if math.isnan(value):
        return "—"
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def ratio(value: float, base: float, digits: int = 2) -> str:
    """``value / base`` to ``digits`` decimals, ``—`` where either is NaN."""
    return "—" if math.isnan(value) or math.isnan(base) else f"{value / base:.{digits}f}"


class Table:
    """A markdown table printed as it grows: the header now, each row when added, so that a
    long run shows its progress.

    Arguments:
        header: The column titles.
    """

    def __init__(self, *header: str) -> None:
        print("\n| " + " | ".join(header) + " |")
        print("|---" * len(header) + "|", flush=True)

    def row(self, *cells: object) -> None:
        """Prints one row; cells are printed with ``str``."""
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)


def print_comparison(
    samples: Mapping[str, Sequence[float]],
    baselines: Mapping[str, str],
    *,
    label: str,
    unit: str,
    ratio_digits: int = 2,
    scale: float = 1.0,
    best: Callable[[Sequence[float]], float] = min,
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """One row per contender: median and best of its repeats, and ratios of medians.

    Arguments:
        samples: Each contender's measurements, one per repeat; ``scale`` times them is in
            ``unit``.
        baselines: Column title to the contender whose median the column divides by.
        label: Title of the first column.
        unit: What the measurements are, e.g. ``ms/step``.
        ratio_digits: Decimals of the ratios.
        scale: Factor from the measurements to ``unit``, e.g. from the seconds of the timed
            steps to seconds per epoch.
        best: ``min`` for times, ``max`` for rates.
        extra: Further columns: title to each contender's cell (``—`` where missing).
    """
    extra = extra or {}
    samples = {name: [scale * value for value in values] for name, values in samples.items()}
    medians = {name: median(values) for name, values in samples.items()}
    table = Table(label, f"{unit} (median)", f"{unit} ({best.__name__})", *baselines, *extra)
    for name, values in samples.items():
        ratios = [
            ratio(medians[name], medians.get(base, math.nan), ratio_digits)
            for base in baselines.values()
        ]
        top = fmt(best(values)) if values else "—"
        cells = [column.get(name, "—") for column in extra.values()]
        table.row(name, fmt(medians[name]), top, *ratios, *cells)
