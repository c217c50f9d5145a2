"""Every Lua example in the README is a complete script that `moongate check` accepts."""
import os
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("MOONGATE_BIN", str(REPO / ".build" / "debug" / "moongate"))
EXAMPLES = re.findall(r"```lua\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example{i + 1}" for i in range(len(EXAMPLES))])
def test_readme_example_passes_check(source, tmp_path):
    (tmp_path / "example.lua").write_text(source)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "queue.json").write_text('{"jobs": []}')
    result = subprocess.run([BIN, "check", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "endpoint" in result.stdout
