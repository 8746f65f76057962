"""README.md and docs/*.md stay true: every ```python block runs as written, the blocks of a page
in order and in one namespace, and the pages' links and CLI options exist."""

import io
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")  # the pages' plots are written, never shown

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
LANGUAGES = {"python", "bash", "text"}
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
MODELS = ("linear-regression", "gmm", "vae", "bnn")


def fences(page: Path) -> list[tuple[str, str]]:
    return FENCE.findall(page.read_text())


def python_blocks(page: Path) -> list[str]:
    return [code for language, code in fences(page) if language == "python"]


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


BLOCKS = [(page, index) for page in PAGES for index in range(len(python_blocks(page)))]


class PageRun:
    """The namespace a page's blocks share and how many of them have run."""

    def __init__(self, page: Path, folder: Path) -> None:
        self.blocks = python_blocks(page)
        self.folder = folder
        self.namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
        self.done = 0
        self.failed: int | None = None

    def run_through(self, index: int, filename: str) -> None:
        """Runs the blocks up to ``index``; later blocks build on the names of earlier ones."""
        if self.done == 0:  # each page starts from a clean Pyro state, as a reader's session
            pyro.clear_param_store()
            pyro.set_rng_seed(0)
        while self.done <= index:
            if self.failed is not None:
                pytest.skip(f"block {self.failed} of this page failed")
            where = f"{filename} [python block {self.done}]"  # names the block in tracebacks
            code = compile(self.blocks[self.done], where, "exec")
            try:
                exec(code, self.namespace)  # noqa: S102 (our own documentation)
            except BaseException:
                self.failed = self.done
                raise
            self.done += 1


@pytest.fixture(scope="module")
def page_runs():
    runs: dict[Path, PageRun] = {}
    yield runs
    runs.clear()  # free the pages' models and data


@pytest.mark.parametrize(
    "page, index", BLOCKS, ids=[f"{name(page)}-{index}" for page, index in BLOCKS]
)
def test_python_block_runs(page, index, page_runs, tmp_path_factory, monkeypatch):
    if page not in page_runs:
        page_runs[page] = PageRun(page, tmp_path_factory.mktemp(page.stem))
    run = page_runs[page]
    monkeypatch.chdir(run.folder)  # files the pages write (runs/...) land in a temporary folder
    threads = torch.get_num_threads()
    try:
        run.run_through(index, name(page))
    finally:
        torch.set_num_threads(threads)


def test_every_page_has_a_python_block_and_only_known_fences():
    for page in PAGES:
        languages = {language for language, _ in fences(page)}
        assert languages <= LANGUAGES, f"{name(page)}: fences {languages - LANGUAGES}"
        if page.name != "cli.md":  # the command line is shown as shell commands
            assert python_blocks(page), f"{name(page)} has no python block"


def test_relative_links_point_at_files():
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{name(page)} links to {target}"


def test_no_issue_numbers():
    for page in PAGES:
        assert not re.search(r"\bissues? #?\d", page.read_text(), re.IGNORECASE), name(page)


def cli_help(*argv: str) -> str:
    from pyroext.cli import main

    printed = io.StringIO()
    with redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return printed.getvalue()


@pytest.mark.parametrize("model", MODELS)
def test_cli_options_documented_for_a_model_exist(model):
    """docs/cli.md lists each model's options in a table row per option: `--name` | models."""
    options = set()
    for row in (ROOT / "docs" / "cli.md").read_text().splitlines():
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`--"):
            applies = cells[1]
            if applies == "all" or model in re.findall(r"[a-z-]+", applies):
                options.add(re.match(r"`(--[a-z-]+)", cells[0]).group(1))
    assert "--guide" in options and "--out" in options
    shown = cli_help("fit", model)
    missing = sorted(o for o in options if not re.search(rf"{re.escape(o)}(?![\w-])", shown))
    assert not missing, f"pyroext fit {model} --help does not list {missing}"
