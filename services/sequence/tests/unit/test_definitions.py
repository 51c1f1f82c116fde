"""Sequence definitions: durations, triggers, steps and email templates, refused with the
field named when they are wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dealflow_common.errors import RuleViolated
from dealflow_sequence.domain.definitions import SequenceDefinition
from dealflow_sequence.domain.durations import InvalidDuration, parse_duration
from dealflow_sequence.domain.templates import check_template, render_template

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("P2D", timedelta(days=2)),
        ("PT4H", timedelta(hours=4)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("P1W", timedelta(weeks=1)),
        ("PT90M", timedelta(minutes=90)),
        ("PT0.5S", timedelta(seconds=0.5)),
        ("P0D", timedelta(0)),
        ("p3d", timedelta(days=3)),
    ],
)
def test_durations_read(text: str, length: timedelta) -> None:
    assert parse_duration(text, "after").length == length


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("-P2D", "negative"),
        ("2 days", "ISO 8601"),
        ("P", "ISO 8601"),
        ("PT", "ISO 8601"),
        ("P1DT", "ISO 8601"),
        ("P1M", "years and months"),
        ("P1Y2D", "years and months"),
        ("", "ISO 8601"),
        (None, "ISO 8601"),
        (5, "ISO 8601"),
        ("P99999D", "ten years"),
    ],
)
def test_bad_durations_are_refused_naming_the_field(text: Any, why: str) -> None:
    with pytest.raises(InvalidDuration, match=why) as refused:
        parse_duration(text, "steps[1].after")
    assert refused.value.field == "steps[1].after"


def test_a_template_renders_the_deal_fields() -> None:
    check_template("Hello {{ contact_name }}, about {{ title | upper }}", "body")
    assert (
        render_template(
            "{{ title }} for {{ customer_name }}", {"title": "Fleet", "customer_name": "ACME"}
        )
        == "Fleet for ACME"
    )


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("Dear {{ contact_nmae }}", "contact_nmae, which a deal does not have"),
        ("{{ title.__class__.__mro__ }}", "not allowed"),
        ("{{ title.__class__ }}", "not allowed"),
        ("{{ ''.__class__.__subclasses__() }}", "not allowed"),
        ("{{ cycler.__init__.__globals__ }}", "not allowed"),
        ("{{ 'x' * 100000000 }}", "not allowed"),
        ("{{ 9 ** 99999999 }}", "not allowed"),
        ("{% for x in title %}{{ x.nope }}{% endfor %}", "cannot be rendered"),
        ("{{ title ", "does not parse"),
    ],
)
def test_templates_that_name_unknown_fields_or_escape_the_sandbox_are_refused(
    template: str, why: str
) -> None:
    with pytest.raises(RuleViolated, match=why) as refused:
        check_template(template, "steps[0].body")
    assert refused.value.field == "steps[0].body"


def define(**changes: Any) -> SequenceDefinition:
    fields: dict[str, Any] = {
        "name": "Proposal follow-up",
        "trigger": {"event": "opportunity.stage_changed", "stage": "proposal"},
        "steps": [{"after": "P2D", "action": "task", "title": "Call"}],
        "exit_conditions": None,
        **changes,
    }
    return SequenceDefinition.define(by="mia", now=NOW, **fields)


def test_the_minimal_definition_has_defaults() -> None:
    sequence = define()
    (step,) = sequence.steps
    assert (step.after.length, step.due and step.due.text, step.assignee) == (
        timedelta(days=2),
        "P1D",
        None,
    )
    assert [c.value for c in sequence.exit_conditions] == ["deal_closed", "trigger_stage_left"]
    again = SequenceDefinition.from_document(
        sequence.document(),
        id=sequence.id,
        version=1,
        created_by="mia",
        created_at=NOW,
        updated_at=NOW,
        retired_at=None,
    )
    assert again == sequence


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"trigger": {"event": "opportunity.exploded", "stage": "proposal"}}, "trigger.event"),
        ({"trigger": {"event": "opportunity.stage_changed"}}, "trigger.stage"),
        ({"trigger": {"event": "opportunity.stage_changed", "stage": "won"}}, "trigger.stage"),
        (
            {"trigger": {"event": "opportunity.stage_changed", "stage": "closed_won"}},
            "trigger.stage",
        ),
        ({"steps": []}, "steps"),
        ({"steps": [{"after": "-P1D", "action": "task", "title": "x"}]}, "steps[0].after"),
        ({"steps": [{"after": "P1D", "action": "fax", "title": "x"}]}, "steps[0].action"),
        ({"steps": [{"after": "P1D", "action": "task"}]}, "steps[0].title"),
        (
            {"steps": [{"after": "P1D", "action": "task", "title": "x", "due": "soon"}]},
            "steps[0].due",
        ),
        (
            {"steps": [{"after": "P1D", "action": "task", "title": "x", "body": "b"}]},
            "steps[0].body",
        ),
        (
            {
                "steps": [
                    {"after": "P1D", "action": "task", "title": "x"},
                    {"after": "P1D", "action": "email", "subject": "Hi", "body": "{{ budget }}"},
                ]
            },
            "steps[1].body",
        ),
        ({"exit_conditions": ["deal_closed", "moon_phase"]}, "exit_conditions[1]"),
        ({"name": " "}, "name"),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleViolated) as refused:
        define(**changes)
    assert refused.value.field == field


def test_an_update_is_a_new_version_and_a_retired_sequence_changes_no_more() -> None:
    sequence = define()
    second = sequence.revise(
        name="Renamed",
        trigger={"event": "opportunity.created", "lead_origin": "web"},
        steps=[{"after": "PT1H", "action": "next_action", "due": "P3D", "note": "call"}],
        exit_conditions=["deal_closed"],
        now=NOW,
    )
    assert (second.id, second.version, sequence.version) == (sequence.id, 2, 1)
    retired = second.retire(NOW)
    with pytest.raises(Exception, match="retired"):
        retired.revise(name="x", trigger={}, steps=[], exit_conditions=None, now=NOW)
