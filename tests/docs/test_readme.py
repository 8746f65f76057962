"""The README's Python blocks run as written, in order."""

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def test_quick_start_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python block"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:  # later blocks use the names defined by earlier ones
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    assert namespace["result"].stop_reason in {"converged", "max_steps"}
    assert (tmp_path / "runs" / "blr.ckpt").is_file()
    assert namespace["exact"].mean.shape == (11,)
    assert namespace["dt"]["posterior"]["w"].dims == ("chain", "draw", "feature")
    printed = capsys.readouterr().out
    assert "step" in printed and "elpd" in printed
