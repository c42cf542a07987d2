"""The two confirmation items of issue 13: metrics are fresh; a notifier is configured, or
having none is an explicit choice. Each is (name, ok, evidence), made into confirm's Item."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from .. import metrics, notify
from ..errors import NeoDbError

MAX_METRICS_AGE_SECONDS = 900  # the timer writes every 5 minutes; the NeoDbMetricsStale alert fires at 15


def metrics_fresh(cfg: Any) -> tuple[str, bool, list[str]]:
    name = "metrics are fresh"
    if cfg.metrics_textfile_dir is None:
        return name, False, ["metrics_textfile_dir is null: neo-db writes no metrics (apply the neo_monitoring role)"]
    path = Path(cfg.metrics_textfile_dir) / metrics.PROM_NAME
    try:
        st = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return name, False, [f"{path}: {exc.strerror}; is neo-db-metrics.timer running? (systemctl status neo-db-metrics.timer)"]
    written = None
    for line in text.splitlines():
        if line.startswith("neo_db_metrics_last_write_timestamp_seconds "):
            written = float(line.split()[-1])
    if written is None:
        return name, False, [f"{path}: no neo_db_metrics_last_write_timestamp_seconds series"]
    age = int(time.time() - written)
    readable = bool(st.st_mode & stat.S_IROTH)
    ok = 0 <= age <= MAX_METRICS_AGE_SECONDS and readable
    return (
        name,
        ok,
        [
            f"{path}: written {age}s ago (at most {MAX_METRICS_AGE_SECONDS}s), mode {stat.S_IMODE(st.st_mode):04o}"
            + ("" if readable else " (node_exporter cannot read it)"),
            f"{sum(1 for ln in text.splitlines() if ln.startswith('neo_db_'))} neo_db_* samples",
        ],
    )


def notifier(cfg: Any) -> tuple[str, bool, list[str]]:
    name = "a notifier is configured, or none is an explicit choice"
    if cfg.notify_secrets_path is None:
        if cfg.notify_explicitly_off:
            return name, True, ["no notifier: an explicit choice (notify_explicitly_off: true, from neo_monitoring_no_notifier)"]
        return (
            name,
            False,
            [
                "no notifier configured and no explicit choice: set neo_monitoring_webhook_url, neo_monitoring_ntfy_url or "
                "neo_monitoring_ping_url (in ansible-vault), or neo_monitoring_no_notifier: true"
            ],
        )
    try:
        targets = notify.load_targets(Path(cfg.notify_secrets_path))
    except NeoDbError as exc:
        return name, False, [exc.message.splitlines()[0] + (f" ({exc.hint})" if exc.hint else "")]
    names = [n for n, url in (("webhook", targets.webhook_url), ("ntfy", targets.ntfy_url), ("ping", targets.ping_url)) if url]
    if not names:
        return name, False, [f"{cfg.notify_secrets_path} names no notifier"]
    where = f"{cfg.notify_secrets_path} (root, 0600; URLs not shown)"
    return name, True, [f"{', '.join(names)} configured in {where}; test: neo-db notify --test"]
