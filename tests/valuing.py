"""Run the valuation flow from flat options, as the CLI and the Python entry point do."""

from __future__ import annotations


def value(amortize_only: bool = False, **options) -> dict:
    from amortval.flows.valuation import value_dataset
    from amortval.tasks.config import RunConfig

    return value_dataset(config=RunConfig.from_options(**options), amortize_only=amortize_only)
