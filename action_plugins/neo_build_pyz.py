"""neo_build_pyz: build neo_db.pyz on the controller with scripts/build-pyz's own code, in-process.

site.yml's first play (issue 18: a rerun in few round trips). A `command` task running build-pyz
costs a module shipped to and started in a new Python on the controller, 0.3 s of every rerun, for a
build of 0.03 s; this plugin imports scripts/build-pyz and calls its build_to() inside
ansible's own worker. The bytes are the script's (the same reproducible zip); OUT appears whole or not
at all (write(): a temp file, fsync, rename), and an unchanged build leaves OUT untouched.

Arguments: script (the path of scripts/build-pyz), dest (OUT.pyz). Never "changed": a build cache on
the controller, not a change to a host (neo_safeguards reports installing the pyz). Runs in --check too:
the roles hash and check the pyz before they change anything.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _requires_connection = False  # the controller's own work: the host is not contacted

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        script, dest = Path(str(self._task.args.get("script", ""))), Path(str(self._task.args.get("dest", "")))
        if not script.is_file() or not str(dest):
            return {**result, "failed": True, "msg": f"neo_build_pyz: script {str(script)!r} is not a file, or dest is empty"}
        loader = importlib.machinery.SourceFileLoader("neo_build_pyz_script", str(script))
        spec = importlib.util.spec_from_loader(loader.name, loader)
        assert spec is not None
        build_pyz = importlib.util.module_from_spec(spec)
        loader.exec_module(build_pyz)
        ok, message = build_pyz.build_to(dest)
        if not ok:
            return {**result, "failed": True, "msg": message}
        return {**result, "changed": False, "built": message.startswith("built "), "dest": str(dest), "msg": message}
