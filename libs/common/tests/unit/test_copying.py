"""`shallow_copy`: the snapshots of the recent copies."""

from __future__ import annotations

from dataclasses import dataclass, field

from dealflow_common.copying import shallow_copy


@dataclass(eq=False)
class Deal:
    title: str
    owners: list[str] = field(default_factory=list)
    made: int = 0

    def __post_init__(self) -> None:
        self.made += 1


def test_the_copy_is_another_instance_of_the_class_with_the_same_values() -> None:
    deal = Deal("Bench", ["ann"])
    deal.title = "Renamed"  # state set after construction is copied as it is now

    twin = shallow_copy(deal)

    assert type(twin) is Deal
    assert twin is not deal
    assert vars(twin) == vars(deal) == {"title": "Renamed", "owners": ["ann"], "made": 1}
    twin.title = "Changed apart"
    assert deal.title == "Renamed"


def test_it_is_shallow_and_does_not_construct_again() -> None:
    deal = Deal("Bench", ["ann"])
    twin = shallow_copy(deal)
    assert twin.owners is deal.owners  # the snapshot replaces its mutable fields itself
    assert twin.made == 1  # __init__ and __post_init__ did not run for the copy
