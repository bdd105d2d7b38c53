"""amortval: data valuation with stochastic amortization, orchestrated by Prefect."""

__version__ = "0.1.0"
