"""Business errors a domain raises, free of any framework.

The HTTP layer turns each kind into one problem+json status in one place
(`http.problems`); domains subclass these with names from their business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self


class DomainError(Exception):
    """Base of every expected business refusal."""

    hidden = False
    """Refused because the caller may not see the record (see `unseen`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def unseen(self) -> Self:
        """Mark the refusal as one of a record that exists but that the caller may not
        see. The answer stays exactly the one for an unknown id (no existence oracle);
        only the audit log tells the two apart."""
        self.hidden = True
        return self


class NotFound(DomainError):
    def __init__(self, entity: str, entity_id: object) -> None:
        super().__init__(f"{entity} {entity_id} does not exist")
        self.entity = entity
        self.entity_id = str(entity_id)


class TransitionNotAllowed(DomainError):
    """A move the state machine forbids; `allowed` lists what the state permits."""

    def __init__(
        self, entity: str, state: str, attempted: str, allowed: Sequence[str], why: str = ""
    ) -> None:
        detail = f"{entity} in state {state} cannot {attempted}"
        if why:
            detail += f": {why}"
        super().__init__(detail)
        self.entity = entity
        self.state = state
        self.attempted = attempted
        self.allowed = list(allowed)


class RuleViolated(DomainError):
    """Input that is well-formed but breaks a business rule; names the field."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class StaleVersion(DomainError):
    def __init__(self, entity: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{entity} is at version {actual}, the request was made against version {expected}"
        )
        self.expected = expected
        self.actual = actual


class NotPermitted(DomainError):
    """The caller is known but may not do this."""


class Conflict(DomainError):
    """The request clashes with the current state for a reason other than a transition."""
