"""The README's marked command blocks, as the tests that run them read them."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(block: str) -> str:
    """The code of the README's ``<!-- block:begin -->`` fenced block, fences dropped."""
    body = README.read_text().split(f"<!-- {block}:begin -->")[1].split(f"<!-- {block}:end -->")[0].strip()
    return body.split("\n", 1)[1].removesuffix("```").strip() + "\n"


def readme_commands(block: str) -> list[str]:
    """The commands of the README's ``<!-- block:begin -->`` bash block, comments dropped."""
    lines = readme_block(block).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
