"""Every message Dealflow services exchange, defined once.

Events are facts published by their owning service; commands are requests addressed
to one service. Each payload class names its type, topic and schema version; the
envelope (CloudEvents 1.0) is added by the outbox. `export` writes their JSON Schemas.
"""

# Importing the event modules registers every payload class by type and version.
from dealflow_common.contracts import opportunity as opportunity
from dealflow_common.contracts import order as order
from dealflow_common.contracts import purge as purge
from dealflow_common.contracts import quote as quote
from dealflow_common.contracts import sequence as sequence
from dealflow_common.contracts.base import EventPayload, dataschema_for, payload_class
from dealflow_common.contracts.envelope import CloudEvent
from dealflow_common.contracts.money import Money

__all__ = ["CloudEvent", "EventPayload", "Money", "dataschema_for", "payload_class"]
