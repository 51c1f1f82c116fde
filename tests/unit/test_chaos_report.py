"""The chaos report lists every read that skipped offsets, from the services' logs."""

from __future__ import annotations

from pathlib import Path

from chaos.report import GONE_PAST, READ_AGAIN, offset_holes


def test_the_report_finds_the_consumer_loops_warnings_of_skipped_offsets(tmp_path: Path) -> None:
    (tmp_path / "quote.log").write_text(
        "INFO applied 3 events\n"
        "WARNING consumer quote-service: a read of dealflow.opportunity.events/4 "
        "skipped offsets 2772 to 2772; reading again from 2772\n"
    )
    (tmp_path / "order-replica2.log").write_text(
        "WARNING consumer order-service: dealflow.quote.events/1 has no record at offset 9 "
        "on a second read either; going on past it\n"
    )
    (tmp_path / "broker.log").write_text("skipped offsets in the broker's own words\n")
    read_again = offset_holes(tmp_path, READ_AGAIN)
    assert len(read_again) == 1
    assert read_again[0].startswith("quote.log: ")
    assert "2772" in read_again[0]
    gone_past = offset_holes(tmp_path, GONE_PAST)
    assert len(gone_past) == 1
    assert gone_past[0].startswith("order-replica2.log: ")
