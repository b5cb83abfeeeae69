"""automix-rs from Python: AutoMix LLM routing with LLMRouter's AutomixRouter API.

A query goes to a small, cheap model first; the model checks its own answer, and a
meta-verifier learned from data keeps the answer or escalates to a larger model. Everything
here runs in the Rust library the ``automix`` CLI and ``automix serve`` use::

    from automix_rs import AutomixRouter, AutomixTrainer
    router = AutomixRouter(yaml_path="configs/llmrouter_automix.yaml")
    AutomixTrainer(router=router, device="cpu").train()   # policy -> save_model_path
    result = router.route_single({"query": "What is the capital of France?"})
    result["model_name"], result["response"], result["verification_score"], result["route_to_llm"]
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Union

from ._automix_rs import (
    AutomixError,
    AutomixRouter,
    AutomixTrainer,
    ConfigError,
    DataError,
    Policy,
    PolicyError,
    UpstreamError,
    __version__,
    compare_signals,
    evaluate_rows,
    train_policy,
)

__all__ = [
    "AutomixError",
    "AutomixRouter",
    "AutomixTrainer",
    "ConfigError",
    "DataError",
    "Policy",
    "PolicyError",
    "UpstreamError",
    "__version__",
    "compare_signals",
    "evaluate",
    "evaluate_rows",
    "train_policy",
]


def evaluate(
    rows: Iterable[Mapping[str, Any]],
    test_rows: Optional[Iterable[Mapping[str, Any]]] = None,
    yaml_path: Optional[str] = None,
    frame: Optional[bool] = None,
) -> Union[list, "Any"]:
    """Every method and baseline on held-out rows, as ``automix eval`` prints them.

    Returns one dict per line (``name``, ``quality``, ``cost``, ``escalation_rate``,
    ``delta_ibc``, ``detail``, ...), or a pandas DataFrame of them when ``frame`` is true,
    or when ``frame`` is None and pandas is installed. pandas is never required. The whole
    report (sweep, frontier, cross-validation) is :func:`evaluate_rows`.
    """
    lines = evaluate_rows(rows, test_rows=test_rows, yaml_path=yaml_path)["lines"]
    if frame is False:
        return lines
    try:
        import pandas  # noqa: PLC0415 (optional)
    except ImportError:
        if frame:
            raise
        return lines
    return pandas.DataFrame(lines)
