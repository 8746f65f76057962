"""Examples stay runnable: each script runs with tiny settings (as Pyro's test_examples does)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.mark.parametrize("example", ["linear_regression.py --steps 100"])
def test_example_runs(example):
    script, *args = example.split()
    result = subprocess.run(
        [sys.executable, EXAMPLES / script, *args], capture_output=True, text=True, check=True
    )
    assert "KL(q || exact)" in result.stdout
