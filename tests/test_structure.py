"""The package's shape: no import circles, small modules and functions (tools/structure.py)."""

import subprocess
import sys
from pathlib import Path

from tools.structure import (
    MAX_FUNCTION_LINES,
    MAX_MODULE_LINES,
    import_cycles,
    import_graph,
    module_files,
    size_violations,
)


def test_no_import_circles_between_signpose_modules():
    assert import_cycles(import_graph(module_files())) == []


def test_no_module_over_500_lines_and_no_function_over_80():
    assert (MAX_MODULE_LINES, MAX_FUNCTION_LINES) == (500, 80)
    assert size_violations(module_files()) == []


def test_the_circle_finder_sees_a_circle_through_a_function_level_import(tmp_path):
    package = tmp_path / "signpose"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from signpose import b\n")
    (package / "b.py").write_text("def f():\n    from signpose.a import g\n")
    (package / "c.py").write_text("import signpose.a\n")
    graph = import_graph(module_files(tmp_path, "signpose"))
    assert graph["signpose.c"] == {"signpose.a"}
    assert import_cycles(graph) == [["signpose.a", "signpose.b"]]


def test_ruff_finds_nothing_with_the_projects_rule_set():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=root,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
