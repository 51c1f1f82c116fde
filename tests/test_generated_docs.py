"""Generated documents match the code they are generated from (`make contracts`)."""

from __future__ import annotations

from tools.generate_docs import ROOT, documents


def test_diagrams_and_asyncapi_documents_are_up_to_date() -> None:
    for path, content in documents().items():
        assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make contracts`"
        assert path.read_text(encoding="utf-8") == content, (
            f"{path.relative_to(ROOT)} differs from the code: run `make contracts` and review"
        )
