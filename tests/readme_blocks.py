"""The README's marked command blocks, as the tests that run them read them."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(block: str) -> list[str]:
    """The commands of the README's ``<!-- block:begin -->`` bash block, comments dropped."""
    text = README.read_text()
    body = text.split(f"<!-- {block}:begin -->")[1].split(f"<!-- {block}:end -->")[0]
    lines = body.strip().removeprefix("```bash").removesuffix("```").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
