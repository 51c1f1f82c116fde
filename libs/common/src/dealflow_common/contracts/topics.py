"""Kafka topic names. Every record is keyed by its opportunity id (DESIGN.md section 2)."""

from typing import Final

OPPORTUNITY_EVENTS: Final = "dealflow.opportunity.events"
QUOTE_EVENTS: Final = "dealflow.quote.events"
ORDER_EVENTS: Final = "dealflow.order.events"
SEQUENCE_EVENTS: Final = "dealflow.sequence.events"
PURGE_EVENTS: Final = "dealflow.purge.events"
QUOTE_COMMANDS: Final = "dealflow.quote.commands"
OPPORTUNITY_COMMANDS: Final = "dealflow.opportunity.commands"

ALL_TOPICS: Final = (
    OPPORTUNITY_EVENTS,
    QUOTE_EVENTS,
    ORDER_EVENTS,
    SEQUENCE_EVENTS,
    PURGE_EVENTS,
    QUOTE_COMMANDS,
    OPPORTUNITY_COMMANDS,
)

DEAD_LETTER_SUFFIX: Final = ".dlq"


def dead_letter_topic(topic: str) -> str:
    """Where messages of `topic` go when they cannot be applied after bounded retries."""
    return topic + DEAD_LETTER_SUFFIX
