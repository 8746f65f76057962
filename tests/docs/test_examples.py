"""Examples stay runnable: each script runs with tiny settings (as Pyro's test_examples does),
in this process as ``__main__``, so that the suite imports torch and Pyro once, not per script."""

import runpy
import sys
from pathlib import Path

import matplotlib
import pyro
import pytest
import torch

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize(
    "example, expected",
    [
        ("linear_regression.py --steps 100", "KL(q || exact)"),
        ("gmm.py --steps 50", "SVI mean-field, q(z_n) enumerated"),
        ("vae_estimators.py --steps 20 --draws 50", "variance ratio score-function"),
        (
            "arviz_export.py --num-samples 30 --num-warmup 30 --steps 100 --out {tmp}",
            "guide health (AutoDAIS): step size per step",
        ),
    ],
)
def test_example_runs(example, expected, tmp_path, monkeypatch, capsys):
    script, *args = example.format(tmp=tmp_path).split()
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), *args])
    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg")
    pyro.clear_param_store()
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    assert expected in capsys.readouterr().out
