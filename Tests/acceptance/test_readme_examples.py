"""Every Lua example in the README is a complete script that `moongate check` accepts. A block
whose first line names a module (`-- lib/NAME.lua`) is a module the examples may require: it is
put in place for every check instead of being checked as a script."""
import os
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("MOONGATE_BIN", str(REPO / ".build" / "debug" / "moongate"))
BLOCKS = re.findall(r"```lua\n(.*?)```", (REPO / "README.md").read_text(), re.S)
MODULE = re.compile(r"-- (lib/[\w/]+\.lua)\n")
MODULES = {MODULE.match(block).group(1): block for block in BLOCKS if MODULE.match(block)}
EXAMPLES = [block for block in BLOCKS if not MODULE.match(block)]


def test_readme_has_examples():
    assert len(EXAMPLES) >= 3
    assert MODULES, "the README shows a module next to the script that requires it"


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example{i + 1}" for i in range(len(EXAMPLES))])
def test_readme_example_passes_check(source, tmp_path):
    (tmp_path / "example.lua").write_text(source)
    for path, module in MODULES.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(module)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "queue.json").write_text('{"jobs": []}')
    result = subprocess.run([BIN, "check", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "endpoint" in result.stdout
