"""Input specs: what a model needs from its data (feature dim, frames, image size), checked early.

A model config declares ``INPUT_SPEC``: config field -> :class:`InputField` (the data's name for the
value and how the two must agree). Before anything is trained or encoded the pipeline calls
:func:`resolve_input_spec`, which fills the fields the config set to ``auto`` from the data and
refuses a mismatch with one line naming both values, instead of a shape error on the first batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from bitseek.errors import ConfigError

__all__ = ["AUTO", "InputField", "input_spec", "is_resolved", "require_resolved", "resolve_input_spec"]

#: what ``auto`` in a config becomes in an integer input field until the data fills it
AUTO = 0


@dataclass(frozen=True)
class InputField:
    """One model input dimension and the data value it must agree with."""

    key: str  # name in ``RetrievalData.info`` (or an attribute of the data config)
    rule: str = "equal"  # equal | at_least (the model's value may exceed the data's, e.g. a position table)
    data_flag: str = ""  # the data-side setting a user would change, for the error message

    def agrees(self, model_value: int, data_value: int) -> bool:
        return model_value == data_value if self.rule == "equal" else model_value >= data_value


def input_spec(model_cfg: Any) -> Mapping[str, InputField]:
    return getattr(type(model_cfg), "INPUT_SPEC", {}) or {}


def is_resolved(model_cfg: Any) -> bool:
    return all(getattr(model_cfg, f) != AUTO for f in input_spec(model_cfg))


def require_resolved(model_cfg: Any, model: str) -> None:
    """Models call this before building layers whose shapes depend on the input spec."""
    todo = [f for f in input_spec(model_cfg) if getattr(model_cfg, f) == AUTO]
    if todo:
        raise ConfigError(f"{model}: model.{todo[0]}=auto is filled from the data; build the model through the "
                          f"pipeline (or bitseek.models.spec.resolve_input_spec) or give model.{todo[0]} a value")


def resolve_input_spec(model_cfg: Any, info: Mapping[str, Any], data_cfg: Any = None) -> Any:
    """``model_cfg`` with ``auto`` fields filled from the data; a disagreement is a ConfigError.

    Values come from ``info`` (what the dataset measured in its files) or, failing that, the data
    config (``data.image_size``). A value the data does not report is left as configured.
    """
    fill: dict[str, int] = {}
    for field, spec in input_spec(model_cfg).items():
        have = info.get(spec.key)
        if have is None and data_cfg is not None:
            have = getattr(data_cfg, spec.key, None)
        if not isinstance(have, int) or isinstance(have, bool):
            continue
        want = getattr(model_cfg, field)
        flag = spec.data_flag or f"data.{spec.key}"
        if want == AUTO:
            fill[field] = have
        elif not spec.agrees(want, have):
            need = "" if spec.rule == "equal" else " or more"
            raise ConfigError(f"model.{field}={want} does not fit the data: {flag} is {have}; set model.{field}="
                              f"{have}{need} (or model.{field}=auto to take it from the data)")
    return dataclasses.replace(model_cfg, **fill) if fill else model_cfg
