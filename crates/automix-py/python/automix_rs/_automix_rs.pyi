"""Type stubs of the native module (built from crates/automix-py with PyO3)."""

from os import PathLike
from typing import Any, Iterable, Mapping, Optional, Union

__version__: str

_Path = Union[str, PathLike[str]]
_Row = Mapping[str, Any]

class AutomixError(Exception):
    """Any automix-rs error."""

class ConfigError(AutomixError):
    """The YAML config, a setting or an argument is wrong (names the file, line and key)."""

class DataError(AutomixError):
    """A data file, a row or a query is malformed or missing (names the file, line and field)."""

class PolicyError(AutomixError):
    """The policy cannot be trained or cannot route with these settings or models."""

class UpstreamError(AutomixError):
    """A model call failed (after the retries that were safe)."""

class AutomixRouter:
    """An AutoMix router from an LLMRouter YAML config (built on the first route)."""

    def __init__(self, yaml_path: _Path) -> None: ...
    @property
    def yaml_path(self) -> str: ...
    @property
    def max_workers(self) -> int: ...
    def route_single(self, query: _Row) -> dict[str, Any]:
        """Routes one query dict; LLMRouter's keys and ours."""
    def route_batch(
        self, batch: Optional[Iterable[_Row]] = None, task_name: Optional[str] = None
    ) -> list[dict[str, Any]]:
        """Routes query dicts, ``max_workers`` at a time, order kept."""
    def reload(self) -> None:
        """Loads the policy and models again on the next route."""

class AutomixTrainer:
    """Trains the router's policy as ``automix train`` does."""

    def __init__(self, router: AutomixRouter, device: str = "cpu") -> None: ...
    def train(self) -> dict[str, Any]:
        """Trains, saves to ``save_model_path`` and returns what training found."""

class Policy:
    """A trained two-model policy."""

    @staticmethod
    def load(path: _Path) -> Policy: ...
    def save(self, path: _Path) -> None: ...
    def decide(self, confidence: Optional[float], task: Optional[str] = None) -> str:
        """``"keep"`` or ``"escalate"`` at the trained operating point."""
    def decide_at(
        self, confidence: Optional[float], lam: float, task: Optional[str] = None
    ) -> str:
        """``"keep"`` or ``"escalate"`` at λ ``lam``."""
    @property
    def lambdas(self) -> list[dict[str, float]]: ...
    @property
    def trained_lambda(self) -> Optional[float]: ...
    @property
    def small_model(self) -> str: ...
    @property
    def large_model(self) -> str: ...
    @property
    def rule(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

def train_policy(
    rows: Iterable[_Row],
    small: Optional[str] = None,
    large: Optional[str] = None,
    yaml_path: Optional[_Path] = None,
) -> Policy:
    """Trains a policy on row dicts (the project's row format)."""

def compare_signals(
    rows: Iterable[_Row],
    resplits: int = 10,
    yaml_path: Optional[_Path] = None,
) -> list[dict[str, Any]]:
    """Every verification signal the rows carry, then their fusion, over the same re-splits."""

def evaluate_rows(
    rows: Iterable[_Row],
    test_rows: Optional[Iterable[_Row]] = None,
    yaml_path: Optional[_Path] = None,
) -> dict[str, Any]:
    """Every method on held-out rows: the report as dicts."""
