"""Examples stay runnable: each script runs with tiny settings (as Pyro's test_examples does)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize(
    "example, expected",
    [
        ("linear_regression.py --steps 100", "KL(q || exact)"),
        ("gmm.py --steps 50", "SVI mean-field, q(z_n) enumerated"),
        ("vae_estimators.py --steps 20 --draws 50", "variance ratio score-function"),
        ("arviz_export.py --num-samples 50 --num-warmup 50 --steps 200 --out {tmp}", "elpd_loo"),
    ],
)
def test_example_runs(example, expected, tmp_path):
    script, *args = example.format(tmp=tmp_path).split()
    result = subprocess.run(
        [sys.executable, EXAMPLES / script, *args], capture_output=True, text=True, check=True
    )
    assert expected in result.stdout
