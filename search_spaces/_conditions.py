"""Conditional parameters: the checks on `when` clauses and the order parameters are drawn in.

A sampled parameter may carry ``when: {parent: [value, ...], ...}``: it is active only while
every named parent is active and takes one of the listed values (all conditions must hold).
A parent is a categorical parameter or a fixed value; a fixed value counts as a categorical
of one choice, so a condition on it either always holds or is rejected.

Every condition is a conjunction of "parent in values", so whether a parameter can ever be
active is exact and cheap to decide: intersect, for each parent up the chain, the values
that all the conditions along the way allow; an empty intersection means never. These
functions work on plain mappings so that the schema module (`_params`) can call them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# A parameter's `when`: parent name -> the values under which the parameter is active.
Conditions = Mapping[str, Sequence[Any]]


class ConditionError(ValueError):
    """A `when` clause that names a bad parent or value, can never hold, or forms a cycle."""


def same_value(a: Any, b: Any) -> bool:
    """Equality as a categorical choice means it: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def contains(values: Sequence[Any], value: Any) -> bool:
    return any(same_value(v, value) for v in values)


def holds(when: Conditions | None, values: Mapping[str, Any]) -> bool:
    """Whether a parameter with `when` is active, given the values drawn so far.

    A parent absent from `values` is inactive, and so is every parameter conditional on it.
    """
    if not when:
        return True
    return all(
        parent in values and contains(allowed, values[parent]) for parent, allowed in when.items()
    )


def _show(values: Sequence[Any]) -> str:
    return ", ".join(repr(v) for v in values)


def _check_parents(
    name: str,
    when: Conditions,
    choices: Mapping[str, Sequence[Any] | None],
    fixed: Mapping[str, Any],
) -> None:
    """Each parent exists, is categorical (or fixed), and each listed value is one it takes."""
    for parent, allowed in when.items():
        if parent not in choices:
            raise ConditionError(
                f"parameter {name!r}: when names {parent!r}, which is not a parameter of the "
                f"space (it has: {', '.join(sorted(choices))})"
            )
        options = choices[parent]
        if options is None:
            raise ConditionError(
                f"parameter {name!r}: when names {parent!r}, a float or int range; a condition "
                "needs a categorical parameter or a fixed value"
            )
        never = [v for v in allowed if not contains(options, v)]
        if never:
            takes = (
                f"it is fixed at {fixed[parent]!r}"
                if parent in fixed
                else f"its choices are {_show(options)}"
            )
            raise ConditionError(
                f"parameter {name!r}: when.{parent} lists {_show(never)}, which {parent!r} can "
                f"never take ({takes}); such values can never make {name!r} active"
            )


def _cycle(start: str, parents: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle through `start` along parent links, as a path from `start` back to it."""
    path: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> bool:
        path.append(node)
        for parent in parents.get(node, []):
            if parent == start:
                path.append(start)
                return True
            if parent not in seen:
                seen.add(parent)
                if visit(parent):
                    return True
        path.pop()
        return False

    return path if visit(start) else None


def suggestion_order(
    conditions: Mapping[str, Conditions | None],
    choices: Mapping[str, Sequence[Any] | None],
    fixed: Mapping[str, Any],
) -> list[str]:
    """The sampled parameters (the keys of `conditions`), each after the parents it names.

    `choices` maps every parameter of the space to its categorical choices (a fixed value: a
    list of that one value; a float or int range: None). Declaration order is kept where the
    conditions allow. Raises `ConditionError` naming the parameter when a parent is unknown
    or not categorical, a listed value is one the parent never takes, the conditions form a
    cycle, or a parameter's conditions can never hold together.
    """
    for name, when in conditions.items():
        if when:
            _check_parents(name, when, choices, fixed)
    parents = {
        name: [p for p in (when or {}) if p in conditions] for name, when in conditions.items()
    }
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(conditions):
        ready = [n for n in conditions if n not in placed and all(p in placed for p in parents[n])]
        if not ready:
            stuck = next(n for n in conditions if n not in placed and _cycle(n, parents))
            loop = _cycle(stuck, parents) or [stuck]
            raise ConditionError(
                f"parameter {stuck!r}: its conditions form a cycle, {' -> '.join(loop)} (each "
                "arrow: a when naming the next); a parameter can only be conditional on "
                "parameters that are not conditional on it"
            )
        order.extend(ready)
        placed.update(ready)
    _check_satisfiable(order, conditions)
    return order


def _check_satisfiable(order: list[str], conditions: Mapping[str, Conditions | None]) -> None:
    """Raise when a parameter's conditions, with those of every parent up the chain, conflict."""
    # needs[name][parent]: the values of `parent` under which `name` can be active.
    needs: dict[str, dict[str, list[Any]]] = {}
    for name in order:
        own: dict[str, list[Any]] = {}
        when = conditions[name] or {}
        sources = [dict(when)] + [needs[p] for p in when if p in needs]
        for source in sources:
            for parent, allowed in source.items():
                if parent not in own:
                    own[parent] = list(allowed)
                    continue
                both = [v for v in own[parent] if contains(allowed, v)]
                if not both:
                    raise ConditionError(
                        f"parameter {name!r} can never be active: its conditions and those of "
                        f"the parameters they name need {parent!r} in [{_show(own[parent])}] "
                        f"and in [{_show(allowed)}] at once"
                    )
                own[parent] = both
        needs[name] = own
