"""The run config: every option of a valuation and its default, in one typed place.

``RunConfig`` is the only place defaults live. The CLI parser (``flows/cli.py``), the
Prefect flow's one parameter (``flows/valuation.py``), ``prefect.yaml`` (overrides only),
the README's option table and the Python entry point are all built from it or checked
against it (``tests/test_config.py``).

Parts: ``inputs`` (what to value), ``utility`` (the model retrained on every subset),
``sampling`` (semivalue, sampler, seed and the budget), ``amortization`` (the valuation
network), ``stopping`` (the rules that end sampling before the budget's cap), and run-level options that change no result (store, outputs, model name,
where batches run).

Two identities come from it (``sampling_identity``, ``run_identity``):
- the **sampling identity** keys samples and batches: the dataset (content and schema,
  validation set included), the utility and its settings, the semivalue, the sampler
  and the seed. Every Monte Carlo unit is a pure function of it and the unit's index, so
  a larger budget extends the stored draws instead of recomputing them;
- the **run identity** adds the budget (samples per point, the cap), the stopping rules
  and the amortization settings: it keys estimates, networks and MLflow runs. A new
  network costs no fits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from amortval.errors import ConfigError
from amortval.models.utility import LEARNER_NAMES

LEARNERS = LEARNER_NAMES
METHODS = ("shapley", "beta", "banzhaf", "distributional")
SAMPLERS = ("permutation", "independent", "msr", "distributional", "shared")
RUNNERS = ("threads", "dask")
DASK_ADDRESS = re.compile(r"tcp://(?P<host>[^\s:/\[\]]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")

# Shapley: one permutation chain gives every point a sample for one fit each.
# Beta: permutation samples would need importance weights up to ~n*p(0) (variance ~8x
# for Beta(16,1)); drawing the cardinality from the Beta prior directly is cheaper overall.
# Banzhaf: maximum sample reuse (Wang & Jia 2023) gives every point a sample per fit.
# Distributional: blocks of a permutation chained onto a small random context, about one
# fit of at most max_size rows per sample (tasks/samplers/distributional.py).
DEFAULT_SAMPLER = {"shapley": "permutation", "beta": "independent", "banzhaf": "msr",
                   "distributional": "distributional"}
COMPATIBLE = {
    "permutation": ("shapley", "beta"),
    "independent": METHODS,
    "msr": ("banzhaf",),
    "distributional": ("distributional",),
    "shared": METHODS,
}
MAX_SEED = 2**63 - 1  # stored as a 64-bit integer; SeedSequence takes any size
MAX_SAMPLES = 100_000  # per point; a larger budget is a typo, not a plan
# --points' default: every row of a table up to this size, a seeded subset this large of a
# larger one. The network pools samples across similar points, so 10,000 sampled rows
# teach it what a million would, at a hundredth of the fits (DESIGN.md, "Amortization at scale").
AUTO_POINTS = 10_000
# The default stopping rule: sample in rounds until the values' estimated normalized error
# (MSE / variance of the true values) is at most this, i.e. about 80% of the variance
# explained; --samples caps it. 0.2 is where flip detection saturates on the benchmarks
# (README, "Anytime valuation").
DEFAULT_TARGET_ERROR = 0.2
# --until-stable watches this lowest share of the rows: the ones curation would drop.
LOWEST_SHARE = 0.10


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputsConfig(_Part):
    """What is valued and how it is read."""

    data: str | None = Field(None, description="CSV or Parquet file to value (default: the built-in demo dataset)")
    target: str | None = Field(None, description="label column (required with --data)")
    valid: str | None = Field(None, description="validation file; the utility is accuracy on it (default: a seeded stratified split of --data)")
    valid_fraction: float = Field(0.2, gt=0.0, lt=1.0, allow_inf_nan=False,
                                  description="share split off --data for validation when --valid is not given")
    mislabeled_column: str | None = Field(None, description="boolean column of known label errors: excluded from features, used to report detection AUROC")
    allow_missing: bool = Field(False, description="impute null/NaN features (numeric: training mean; categorical: no level) instead of refusing them")
    encode: bool = Field(True, description="one-hot encode string columns (--no-encode: a non-numeric feature is an error)")


class UtilityConfig(_Part):
    """The utility v(S): accuracy on the validation set of a learner trained on S."""

    learner: Literal[LEARNERS] = Field("logreg", description="model retrained on every subset: logreg (torch, many fits at once), mlp, xgboost, knn (Jia et al.; exact Shapley values known)")
    knn_k: int = Field(5, ge=1, description="k of the knn utility")

    def identity(self) -> dict:
        """What changes v(S): ``knn_k`` only for the KNN learner."""
        return {"learner": self.learner, **({"knn_k": self.knn_k} if self.learner == "knn" else {})}


class SamplingConfig(_Part):
    """The semivalue, how it is sampled, and the budget."""

    method: Literal[METHODS] = Field("shapley", description="semivalue: Data Shapley, Beta Shapley, Data Banzhaf, Distributional Shapley")
    sampler: Literal[SAMPLERS] | None = Field(None, description="Monte Carlo sampler (default: permutation for shapley, independent for beta, msr for banzhaf, distributional for distributional; shared, for any method, evaluates one coalition per draw with each sampled row toggled: (P+1)/P fits a sample of P sampled rows, for many draws of a few rows; with few draws every row sits at the same sizes and the network learns less)")
    alpha: float = Field(16.0, gt=0.0, allow_inf_nan=False, description="Beta Shapley alpha")
    beta: float = Field(1.0, gt=0.0, allow_inf_nan=False, description="Beta Shapley beta")
    min_size: int = Field(0, ge=0, description="distributional: smallest coalition |S|; 0 is Ghorbani et al.'s definition, |S| uniform on 0..max_size-1")
    max_size: int = Field(1000, ge=1, description="distributional: coalitions have |S| < max_size, clipped to the training set; 1,000 keeps every fit about 1,000 rows whatever n (the paper's CIFAR-10 scale); at or above n it is Data Shapley")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="run seed: every random draw derives from it through named streams")
    points: float | None = Field(
        None, gt=0.0, allow_inf_nan=False,
        description=f"rows that get Monte Carlo samples: a count above 1 (e.g. 5000) or a fraction up to 1 (e.g. 0.1), "
                    f"a seeded subset; the network values every row (default: all rows up to {AUTO_POINTS:,}, "
                    f"a seeded {AUTO_POINTS:,} of a larger table)")
    samples: int = Field(50, ge=1, le=MAX_SAMPLES, description="Monte Carlo samples per point (the budget; a larger one extends a stored run)")
    batch_fits: int = Field(2000, ge=1, description="model fits per Prefect task (changes no result)")

    @field_validator("sampler")
    @classmethod
    def _check_sampler(cls, sampler: str | None, info: ValidationInfo) -> str | None:
        method = info.data.get("method")
        if sampler is not None and method is not None and method not in COMPATIBLE[sampler]:
            raise ValueError(f"sampler {sampler!r} cannot estimate method {method!r}; "
                             f"it supports {', '.join(COMPATIBLE[sampler])}")
        return sampler

    @field_validator("max_size")
    @classmethod
    def _check_sizes(cls, max_size: int, info: ValidationInfo) -> int:
        min_size = info.data.get("min_size")
        if min_size is not None and min_size >= max_size:
            raise ValueError(f"must be above --min-size (got {max_size} <= {min_size})")
        return max_size

    @field_validator("points")
    @classmethod
    def _check_points(cls, points: float | None) -> float | None:
        if points is not None and points > 1 and points != int(points):
            raise ValueError("a count above 1 must be a whole number of rows; a fraction is at most 1")
        return points

    def n_sampled(self, n: int) -> int:
        """How many of the n training rows get samples (``--points``, resolved)."""
        if self.points is None:
            return min(n, AUTO_POINTS)
        if self.points <= 1:
            return max(1, min(n, round(self.points * n)))
        return min(n, int(self.points))

    @property
    def sampler_name(self) -> str:
        """The sampler used: the one given, else the method's default."""
        return self.sampler or DEFAULT_SAMPLER[self.method]

    def identity(self, n: int | None = None) -> dict:
        """What changes the draws: not the budget, not the batch size, not the parameters of
        another method (the sizes as given: they are clipped to n only at run time). With
        the table's size n, the number of sampled rows when it is a strict subset (the rows
        themselves follow from it and the seed); sampling every row adds nothing, so runs
        stored before ``--points`` existed keep their identity."""
        params = {"beta": {"alpha": self.alpha, "beta": self.beta},
                  "distributional": {"min_size": self.min_size, "max_size": self.max_size}}
        subset = {} if n is None or self.n_sampled(n) >= n else {"points": self.n_sampled(n)}
        return {"method": self.method, "sampler": self.sampler_name, "seed": self.seed,
                **params.get(self.method, {}), **subset}


class AmortizationConfig(_Part):
    """Valuation network and its training (Covert et al. 2024 settings, tasks/amortize.py)."""

    hidden: int = Field(128, ge=1, description="valuation-network hidden units per layer")
    layers: int = Field(3, ge=1, description="valuation-network hidden layers")
    pretrain_epochs: int = Field(20, ge=0, description="classifier pretraining epochs on (x, y)")
    epochs: int = Field(10, ge=1, description="regression epochs (cosine schedule); each network keeps its best held-out epoch")
    batch_size: int = Field(32, ge=1, description="valuation-network minibatch size")
    lr: float = Field(5e-4, gt=0.0, allow_inf_nan=False, description="valuation-network learning rate (Adam)")
    lr_tries: int = Field(2, ge=1, description="learning rates tried: --lr, then each a fifth of the last; the one "
                                                "with the lowest held-out MSE over the folds is kept")
    folds: int = Field(5, ge=2, description="cross-fitted networks, each holding out one fold of the draws")
    control_below: int = Field(10, ge=0, description="control variate for small coalitions: each sample at a "
                                                     "cardinality below this, less its (cardinality, label) mean, "
                                                     "plus that mean's expectation; 0: off")


_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?")


def parse_duration(raw: Any) -> Any:
    """Seconds from ``"20m"``, ``"1h30m"``, ``"90s"`` or a plain number of seconds."""
    if isinstance(raw, str):
        text = raw.strip().lower().replace(" ", "")
        match = _DURATION.fullmatch(text)
        if not (text and match and any(match.groupdict().values())):
            raise ValueError("must be a duration such as 20m, 1h30m, 90s, or a number of seconds")
        return sum(float(match[k] or 0) * f for k, f in (("h", 3600), ("m", 60), ("s", 1)))
    return raw


Duration = Annotated[float, BeforeValidator(parse_duration)]


class StoppingConfig(_Part):
    """When sampling stops: rounds of growing budgets, each re-amortized and checked
    (``tasks/stopping.py``). ``--samples`` caps every rule."""

    target_error: float | None = Field(
        DEFAULT_TARGET_ERROR, gt=0.0, allow_inf_nan=False,
        description="stop once the estimated normalized error of the values (estimated MSE over the estimated "
                    "variance of the true values, from the held-out samples) is at most this; off: sample to "
                    "--samples in one round")
    time_budget: Duration | None = Field(
        None, gt=0.0, allow_inf_nan=False,
        description="stop when the next round would not finish within this wall time from the start "
                    "(20m, 1h30m, 90s or seconds; the last round is sized to fit)")
    until_stable: bool = Field(
        False, description=f"stop when the lowest {LOWEST_SHARE:.0%} of the rows stay the same between two rounds "
                           "(overlap at least --stable-overlap)")
    stable_overlap: float = Field(0.9, gt=0.0, le=1.0, allow_inf_nan=False,
                                  description="share of the lowest rows two rounds must have in common for --until-stable")
    first_round: int = Field(2, ge=1, description="samples per point of the first round; each round doubles it, up to --samples")
    rule: str | None = Field(
        None, description="a composed rule instead of the three above, e.g. 'target_error(0.1) & until_stable(0.9) "
                          "| time_budget(3600)' (tasks/stopping.py; the Python API's stop=)")

    @field_validator("rule")
    @classmethod
    def _check_rule(cls, rule: str | None) -> str | None:
        if rule is None:
            return None
        from amortval.tasks.stopping import parse  # the rules import this module

        return repr(parse(rule))  # canonical text: the same rule, the same run identity

    @property
    def rounds(self) -> bool:
        """Whether any rule can stop before the cap (else one round at --samples)."""
        return self.rule is not None or self.target_error is not None or self.time_budget is not None \
            or self.until_stable


class RunConfig(_Part):
    """Every option of ``amortval value``; see the module docstring for the identities."""

    inputs: InputsConfig = Field(default_factory=InputsConfig)
    utility: UtilityConfig = Field(default_factory=UtilityConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    amortization: AmortizationConfig = Field(default_factory=AmortizationConfig)
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    store: str = Field("amortval-store", description="folder for the DuckDB store, the MLflow database and outputs")
    out: str | None = Field(None, description="also write the per-row values to this Parquet file")
    model_name: str | None = Field(None, description="MLflow registered model (default: amortval-<data file stem>)")
    workers: int | None = Field(None, ge=1, description="batches evaluated at once, one thread per fit (default: the CPU count)")
    runner: Literal[RUNNERS] = Field("threads", description="where batches run: threads in this process, or a local Dask cluster of worker processes; same results either way")
    dask_address: str | None = Field(None, description="run the batches on the existing Dask cluster whose scheduler is at tcp://HOST:PORT (implies --runner dask; its worker threads replace --workers; every worker must read --store at the same path, see Running on a Dask cluster)")

    @model_validator(mode="before")
    @classmethod
    def _address_means_dask(cls, raw: Any) -> Any:
        """An address implies the Dask runner; ``runner="threads"`` given with one is refused below."""
        if isinstance(raw, dict) and raw.get("dask_address") is not None and "runner" not in raw:
            return {**raw, "runner": "dask"}
        return raw

    @field_validator("dask_address")
    @classmethod
    def _check_address(cls, address: str | None, info: ValidationInfo) -> str | None:
        if address is None:
            return None
        match = DASK_ADDRESS.fullmatch(address)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError("must be tcp://HOST:PORT, the address `dask scheduler` prints")
        if info.data.get("runner") == "threads":
            raise ValueError("runs the batches on that Dask cluster; it cannot go with --runner threads "
                             "(drop --runner)")
        return address

    @field_validator("store")
    @classmethod
    def _store_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a folder")
        return value

    @property
    def thread_count(self) -> int:
        """Threads this process runs fits on: ``workers``, else the CPU count."""
        return self.workers or os.cpu_count() or 1

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_options(cls, **options: Any) -> RunConfig:
        """A config from flat option names (``samples=20, epochs=5``), as the CLI takes them.

        Unknown names and bad values raise ``ConfigError`` naming the option.
        """
        nested: dict[str, Any] = {}
        unknown = []
        for name, value in options.items():
            part = OPTION_PARTS.get(name)
            if part is None:
                unknown.append(name)
            elif part == "":
                nested[name] = value
            else:
                nested.setdefault(part, {})[name] = value
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(OPTION_PARTS)}")
        return cls.build(nested)

    @classmethod
    def build(cls, raw: dict | RunConfig | None) -> RunConfig:
        """Validate a nested dict (a flow parameter, a stored config) into a config."""
        if isinstance(raw, RunConfig):
            return raw
        try:
            return cls.model_validate(raw or {})
        except ValidationError as error:
            raise ConfigError(describe(error)) from None

    def replace(self, **options: Any) -> RunConfig:
        """A copy with some flat options changed (validated)."""
        return RunConfig.from_options(**{**self.options(), **options})

    def options(self, *, changed_only: bool = False) -> dict[str, Any]:
        """Flat option name -> value (every option, or only those not at their default)."""
        raw = self.model_dump(exclude_defaults=changed_only)
        flat = {k: v for k, v in raw.items() if not isinstance(v, dict)}
        for part in PARTS:
            flat |= raw.get(part, {})
        return flat

    # -- identities -------------------------------------------------------------------
    def sampling_identity(self, dataset_id: str, n: int | None = None) -> dict:
        """``n``: the training rows, which resolve ``--points`` (see ``SamplingConfig.identity``)."""
        return {"dataset": dataset_id, "utility": self.utility.identity(), "sampling": self.sampling.identity(n)}

    def sampling_id(self, dataset_id: str, n: int | None = None) -> str:
        """Keys samples and batches (see the module docstring)."""
        return f"{self.sampling.method}-{self.utility.learner}-{_digest(self.sampling_identity(dataset_id, n))}"

    def run_identity(self, dataset_id: str, n: int | None = None) -> dict:
        return {"sampling": self.sampling_id(dataset_id, n), "samples": self.sampling.samples,
                "amortization": self.amortization.model_dump(), "stopping": self.stopping.model_dump()}

    def run_id(self, dataset_id: str, n: int | None = None) -> str:
        """Keys estimates, networks and MLflow runs: sampling identity + budget + network."""
        return f"{self.sampling_id(dataset_id, n)}-m{self.sampling.samples}-{_digest(self.run_identity(dataset_id, n))[:6]}"


PARTS = ("inputs", "utility", "sampling", "amortization", "stopping")
# Flat option name -> its part ("" for run-level options). Names are unique across parts.
OPTION_PARTS: dict[str, str] = {
    **{name: part for part in PARTS for name in RunConfig.model_fields[part].annotation.model_fields},
    **{name: "" for name in RunConfig.model_fields if name not in PARTS},
}
assert len(OPTION_PARTS) == sum(len(RunConfig.model_fields[p].annotation.model_fields) for p in PARTS) + \
    len(RunConfig.model_fields) - len(PARTS), "option names must be unique across parts"


def option_fields() -> dict[str, Any]:
    """Flat option name -> pydantic FieldInfo (type, default, description)."""
    fields: dict[str, Any] = {}
    for name, part in OPTION_PARTS.items():
        model = RunConfig.model_fields[part].annotation if part else RunConfig
        fields[name] = model.model_fields[name]
    return fields


def describe(error: ValidationError) -> str:
    """One line per problem, naming the option as the CLI spells it."""
    lines = []
    for problem in error.errors():
        location = [str(p) for p in problem["loc"] if str(p) not in PARTS]
        flag = "--" + location[-1].replace("_", "-") if location else "config"
        message = problem["msg"].removeprefix("Value error, ")
        value = problem.get("input")
        shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
        if problem["type"] == "extra_forbidden":
            message = "unknown option"
        lines.append(f"{flag}: {message}{shown}")
    return "; ".join(lines)


def _digest(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, default=_json_number)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("non-finite value in an identity")
    return str(value)
