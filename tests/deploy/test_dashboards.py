"""The Grafana dashboards under deploy/grafana/ against the metrics the code registers.

Every metric name a panel's PromQL (`targets[].expr`) or a template variable's query
uses must be one the services expose on /metrics: each installed service's app is
built in-process (no broker, no database connection) and its Prometheus registry read,
with the names as the exposition writes them (a Counter `x` is `x_total`, a Histogram
`x` is `x_bucket`, `x_sum` and `x_count`). A panel naming a metric that no service
registers, or naming it without its suffix, fails here.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from dealflow_common.platform import build_platform
from dealflow_common.runtime.processes import installed_services, owns_database, service_module
from dealflow_common.testing import settings_for

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))

# PromQL words that are not metric names (binary operators, modifiers, literals).
KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}
# Series Prometheus writes itself for every target it scrapes.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
_LABEL_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_OFFSET = re.compile(r"\boffset\s+-?[\w.]+", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels, words)."""
    text = _STRING.sub('""', expr)
    text = _OFFSET.sub(" ", text)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _LABEL_MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def variable_metric_names(query: str) -> set[str]:
    """A template variable's query: `label_values(selector, label)`, `label_values(label)`
    (no metric), or a PromQL expression (`query_result(...)` included)."""
    found = _LABEL_VALUES.match(query)
    if found is None:
        return metric_names(query)
    arguments = found.group(1)
    if "," not in _STRING.sub('""', _LABEL_MATCHERS.sub("{}", arguments)):
        return set()  # label_values(label): values across all series
    selector = arguments.rsplit(",", 1)[0]
    return metric_names(selector)


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows (collapsed or not) included."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def used_metrics(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Each metric a dashboard uses -> where (panel titles, `variable <name>`)."""
    used: dict[str, set[str]] = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            for name in metric_names(str(target.get("expr", ""))):
                used.setdefault(name, set()).add(str(panel.get("title")))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        for name in variable_metric_names(text):
            used.setdefault(name, set()).add(f"variable {variable.get('name')}")
    return used


def unknown_metrics(dashboard: dict[str, Any], known: set[str]) -> dict[str, set[str]]:
    return {name: where for name, where in used_metrics(dashboard).items() if name not in known}


def exposed_names(family_name: str, family_type: str) -> set[str]:
    """The sample names the text exposition writes for a metric family."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }.get(family_type, ("",))
    return {family_name + suffix for suffix in suffixes}


@cache
def registered_metrics() -> frozenset[str]:
    """Every metric name any installed service exposes on /metrics, as exposed."""
    names: set[str] = set()
    for _name, settings_class in installed_services().items():
        if not owns_database(settings_class):
            continue  # the console: no platform, only the HTTP metrics every service has
        bootstrap = importlib.import_module(f"{service_module(settings_class)}.bootstrap")
        settings = settings_for(
            settings_class, "sqlite+aiosqlite:///:memory:", "dashboards-" + "x" * 40
        )
        platform = build_platform(settings, publishes=[])
        app = bootstrap.build_app(settings, platform)
        app.build_middleware_stack()  # the HTTP metrics are registered by the middleware
        for family in platform.registry.collect():
            names |= exposed_names(family.name, family.type)
    return frozenset(names)


def load(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path.name} is not a dashboard object"
    return document


def test_there_are_dashboards() -> None:
    assert GRAFANA / "purge-agent.json" in DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_metric_a_dashboard_uses_is_registered_by_a_service(path: Path) -> None:
    dashboard = load(path)
    assert used_metrics(dashboard), f"{path.name}: no panel queries any metric"
    missing = unknown_metrics(dashboard, set(registered_metrics()) | PROMETHEUS_OWN)
    assert not missing, f"{path.name} uses metrics no service registers: " + "; ".join(
        f"{name} (in {', '.join(sorted(where))})" for name, where in sorted(missing.items())
    )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_a_dashboard_is_an_importable_grafana_model(path: Path) -> None:
    """Prometheus is an input (`${DS_PROMETHEUS}`), chosen when the dashboard is imported."""
    dashboard = load(path)
    assert dashboard.get("uid")
    assert dashboard.get("title")
    assert dashboard.get("schemaVersion")
    inputs = {i["name"]: i for i in dashboard.get("__inputs", [])}
    assert inputs.get("DS_PROMETHEUS", {}).get("pluginId") == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
    for panel in panels(dashboard):
        assert set(panel.get("gridPos", {})) >= {"h", "w", "x", "y"}, panel.get("title")
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"{path.name}: panel {panel.get('title')!r} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), panel.get("title")
            source = target.get("datasource") or panel.get("datasource")
            assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel.get("title")


def test_the_purge_dashboard_shows_every_purge_metric() -> None:
    """Each metric the purge agent registers appears on its dashboard."""
    from prometheus_client import CollectorRegistry

    from dealflow_purge.application.metrics import PurgeMetrics

    registry = CollectorRegistry()
    PurgeMetrics(registry)
    families = {f.name: f.type for f in registry.collect()}
    used = set(used_metrics(load(GRAFANA / "purge-agent.json")))
    for name, kind in families.items():
        exposed = exposed_names(name, kind) - {name + "_created"}
        assert used & exposed, f"purge-agent.json shows nothing of {name} ({kind})"
    run_duration = exposed_names("dealflow_purge_run_duration_seconds", "histogram")
    assert "dealflow_purge_run_duration_seconds_bucket" in used & run_duration  # quantiles


# --- the extractor itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (outcome) (increase(a_total{job=~"$job", x="b_total"}[1h]))', {"a_total"}),
        (
            "histogram_quantile(0.95, sum by (le) (rate(d_seconds_bucket[$__rate_interval])))",
            {"d_seconds_bucket"},
        ),
        ("sum(rate(s_sum[6h])) / sum(rate(s_count[6h]))", {"s_sum", "s_count"}),
        ("time() - max(t_seconds > 0)", {"t_seconds"}),
        ("sum(increase(c_total[$__range])) or vector(0)", {"c_total"}),
        ("a > bool 1e3 and on (job) group_left (instance) b offset 5m", {"a", "b"}),
        ("sum without (instance) (g) * 2 unless ignoring (le) h", {"g", "h"}),
        ("rate(c_total[5m:1m]) * ${factor} + $offset", {"c_total"}),
        ("max_over_time(m[1h] offset -1d)", {"m"}),
        ('{__name__="x"}', set()),
        ("ns:job:rate5m", {"ns:job:rate5m"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_variable_queries() -> None:
    assert variable_metric_names('label_values(svc_info{service="purge"}, job)') == {"svc_info"}
    assert variable_metric_names("label_values(job)") == set()
    assert variable_metric_names("query_result(max by (job) (q_total))") == {"q_total"}


def test_a_panel_naming_an_unknown_metric_is_caught() -> None:
    """The check fails a dashboard whose panel names a metric that no code registers,
    including a counter named without `_total` and one nested in a collapsed row."""
    known = set(registered_metrics())
    assert "dealflow_purge_runs_total" in known
    assert "dealflow_purge_run_duration_seconds_bucket" in known
    assert "dealflow_http_requests_total" in known  # registered by the HTTP middleware
    assert "dealflow_purge_runs" not in known  # the family, not an exposed name
    dashboard = {
        "panels": [
            {"type": "timeseries", "title": "ok", "targets": [{"expr": "dealflow_purge_backlog"}]},
            {
                "type": "row",
                "title": "collapsed",
                "panels": [
                    {
                        "type": "stat",
                        "title": "typo",
                        "targets": [{"expr": "sum(rate(dealflow_purge_runz_total[5m]))"}],
                    },
                    {
                        "type": "stat",
                        "title": "no suffix",
                        "targets": [{"expr": "increase(dealflow_purge_runs[1h])"}],
                    },
                ],
            },
        ],
        "templating": {"list": [{"type": "query", "name": "v", "query": "label_values(nope, a)"}]},
    }
    assert unknown_metrics(dashboard, known) == {
        "dealflow_purge_runz_total": {"typo"},
        "dealflow_purge_runs": {"no suffix"},
        "nope": {"variable v"},
    }


def test_the_saga_dashboard_shows_what_operators_ask_of_the_saga() -> None:
    """Deals per stage move, accept-to-won from its histogram, lag per group, outbox
    backlog and the age of its oldest row, dead letters."""
    used = set(used_metrics(load(GRAFANA / "saga.json")))
    assert used >= {
        "dealflow_opportunity_stage_moves_total",
        "dealflow_saga_accept_to_won_seconds_bucket",
        "dealflow_consumer_lag",
        "dealflow_outbox_backlog",
        "dealflow_outbox_oldest_unsent_age_seconds",
        "dealflow_events_consumed_total",
    }
