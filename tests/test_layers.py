"""The package's layers: actions/ holds the commands, core/ the services they share (issue 17).

No module in actions/ imports another actions/ module, and nothing in core/ imports from actions/:
a command reads top to bottom, and what two commands share lives one layer down.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "scripts" / "neo_db"


def action_imports(source: str, layer: str) -> list[str]:
    """The imports in source (a module of neo_db/<layer>/) that reach a module of neo_db/actions/."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [a.name for a in node.names]
            if node.level == 1 and layer == "actions":  # from . import x / from .x import y
                found.append(f"from .{module} import {', '.join(names)}")
            elif node.level == 2 and (module == "actions" or module.startswith("actions.")):  # from ..actions import x
                found.append(f"from ..{module} import {', '.join(names)}")
            elif node.level == 0 and (module == "neo_db.actions" or module.startswith("neo_db.actions.")):
                found.append(f"from {module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("neo_db.actions")]
    return found


def _violations(layer: str) -> dict[str, list[str]]:
    out = {}
    for path in sorted((PKG / layer).glob("*.py")):
        if path.name == "__init__.py":
            continue
        bad = action_imports(path.read_text(encoding="utf-8"), layer)
        if bad:
            out[path.name] = bad
    return out


def test_the_checker_flags_action_imports() -> None:
    """Positive control: each form of an action-to-action import is seen, and an ordinary import is not."""
    for source in (
        "from . import backup\n",
        "from .backup import take_backup\n",
        "def f():\n    from . import restore  # noqa\n",
        "from ..actions import listing\n",
        "from ..actions.prune import plan\n",
        "import neo_db.actions.session\n",
    ):
        assert action_imports(source, "actions"), source
    assert action_imports("from ..actions import listing\n", "core")
    assert not action_imports("from .. import catalog, fsutil\nfrom ..core import pipeline\nimport os\n", "actions")
    assert not action_imports("from . import pipeline\n", "core")  # core's own modules are fine


def test_no_action_imports_another_action() -> None:
    assert sorted(p.name for p in (PKG / "actions").glob("*.py"))  # the checker has something to read
    assert _violations("actions") == {}


def test_core_imports_nothing_from_actions() -> None:
    assert (PKG / "core").is_dir(), "scripts/neo_db/core is the layer below actions/"
    assert sorted(p.name for p in (PKG / "core").glob("*.py"))
    assert _violations("core") == {}
