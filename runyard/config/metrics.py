"""The `[metrics]` table: who may read `GET /metrics`."""

from __future__ import annotations

from dataclasses import dataclass

from runyard.config.checks import Problems, check_bool, check_keys, check_table

METRICS_KEYS = ("public",)


@dataclass(frozen=True)
class MetricsSettings:
    # False: /metrics needs the daemon's bearer token, like the rest of the API
    # (Prometheus sends it with `authorization`). True: anyone who reaches the
    # port may scrape it; the figures name tasks and accounts, nothing secret.
    public: bool = False


def parse_metrics(value: object, problems: Problems) -> MetricsSettings:
    """Return the checked `[metrics]` table; defaults where a key is absent or wrong."""
    table = check_table(value, "metrics", problems)
    if table is None:
        return MetricsSettings()
    check_keys(table, "metrics", METRICS_KEYS, problems)
    public = check_bool(table["public"], "metrics.public", problems) if "public" in table else None
    return MetricsSettings(public=bool(public))
