"""A sampler that never repeats a point the study has already tried (``sweep.sampler.unique=true``).

On a finite search space (BARS's tuning grids, or a ``conf/search`` space of choices and stepped ranges) random search
and TPE sample with replacement: the sweep-strategy study (docs/sweeps.md, "Which strategy?") found them visiting
only 23-25 distinct points of a 36-point grid in 36 trials, so at the grid's full compute they end below the grid
walked in a random order. Training a trial is deterministic for a configuration (same seed), so a repeated point
spends a trial's compute to learn nothing.

:class:`UniqueSampler` wraps the configured sampler (TPE or random). For each trial it asks the wrapped sampler
for a whole point (its relative sample, then its independent sample for the rest, as Optuna would), and takes it
if no finished, running or waiting trial of the study holds that point; otherwise it asks again, up to
``attempts`` times (each ask draws anew: TPE's candidates and random's values come from the sampler's generator),
then takes a point uniformly at random among those not yet tried. When every point of a finite space is taken it
answers what the wrapped sampler proposes (a repeat): the sweep stops before that, as a study records its space's
size (``space_points``) and an exhausted space (its current points, :func:`space_exhausted`) counts as done (``bars.study.budget_state``).

Points are compared on the study's current search space when the wrapper is given one (``space_of``: the sweep
passes the last launcher's recorded space, :func:`bars.study.recorded_space`), so that after a resume whose range
moved the new points are still chosen jointly on every dimension, and a trial whose point lies outside the current
space (from before it changed) takes no point of it. Without one, points are compared on the parameters every trial
shares (the intersection search space of the finished and running trials, each value by :func:`value_key`); a space
with parameters that only some trials have (conditional parameters) is compared on the shared ones. A continuous
dimension (a float without ``step``) makes the space infinite: repeats are then practically impossible and the
wrapper steps aside (the wrapped sampler's own relative space and samples, call for call: the same trials as without
it, for the same seed). The first trial of a study
(no shared space yet) is the wrapped sampler's too. With Optuna's Hyperband pruner a sampler sees only the trials
of the current trial's bracket, so repeats are avoided within a bracket.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

# the trials a new one must not repeat: finished, and running/waiting ones (parallel workers)
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
ENUMERATE_MAX = 200_000  # spaces up to this many points are enumerated for the fallback; larger: rejection


def choices_of(dist: BaseDistribution) -> list[Any] | None:
    """The values a distribution can take (external representation), or None when there are infinitely many."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        if dist.log:
            return list(range(int(dist.low), int(dist.high) + 1))
        return list(range(int(dist.low), int(dist.high) + 1, int(dist.step)))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        n = math.floor((dist.high - dist.low) / dist.step + 1e-9) + 1
        return [dist.low + i * dist.step for i in range(n)]  # as Optuna forms them (low + k * step, unrounded)
    return None


def value_key(dist: BaseDistribution, value: Any) -> Any:
    """What identifies ``value`` on ``dist``: a stepped float by its step index (0.3 and 0.30000000000000004 are
    one point), anything else by Optuna's internal representation (a categorical by its choice's index)."""
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        return round((float(value) - dist.low) / dist.step)
    return dist.to_internal_repr(value)


def space_size(space: Mapping[str, BaseDistribution]) -> int | None:
    """How many points the space has (the product of its dimensions' sizes); None when a dimension is continuous."""
    n = 1
    for dist in space.values():
        c = choices_of(dist)
        if c is None:
            return None
        n *= len(c)
    return n


def point_key(params: Mapping[str, Any], space: Mapping[str, BaseDistribution]) -> tuple | None:
    """A hashable key of a point on the space's dimensions (None when ``params`` lacks one of them)."""
    try:
        return tuple((k, value_key(space[k], params[k])) for k in sorted(space))
    except KeyError:
        return None


def taken_keys(trials: Iterable[FrozenTrial], space: Mapping[str, BaseDistribution], *,
               states: Sequence[TrialState] = TAKEN, exclude: int | None = None) -> set[tuple]:
    """The keys of the points held by ``trials`` in ``states`` (not trial number ``exclude``) on the finite
    ``space``; a trial with a value outside it holds none."""
    out = set()
    for t in trials:
        if t.state not in states or t.number == exclude:
            continue
        if not all(contains(d, t.params[n]) for n, d in space.items() if n in t.params):
            continue  # a point outside the space (from before a resume changed it) takes none of its points
        k = point_key(t.params, space)
        if k is not None:
            out.add(k)
    return out


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one of the points of a finite dimension ``dist`` (a stepped float: on a step)."""
    if isinstance(dist, CategoricalDistribution):
        try:
            dist.to_internal_repr(value)
        except ValueError:
            return False
        return True
    if choices_of(dist) is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    if isinstance(dist, FloatDistribution):
        at = (float(value) - dist.low) / dist.step
        return abs(at - round(at)) < 1e-6 and 0 <= round(at) < len(choices_of(dist))
    return int(value) == value and value in set(choices_of(dist))


def space_exhausted(finished: Iterable[FrozenTrial], space: Mapping[str, BaseDistribution] | None) -> bool:
    """Whether ``finished`` trials hold every point of the finite ``space`` (the study's current one: a trial
    whose point lies outside it, from before the space shrank, does not count; a dimension the space no longer has
    is ignored). An infinite or empty space (or None) is never exhausted."""
    size = space_size(space) if space else None
    if not size:
        return False
    held = {point_key(t.params, space) for t in finished
            if all(k in t.params and contains(d, t.params[k]) for k, d in space.items())}
    return len(held) >= size


def shared_space(trials: Iterable[FrozenTrial], exclude: int | None = None) -> dict[str, BaseDistribution]:
    """The dimensions (of more than one value) every taken trial with parameters has, with the same distribution:
    Optuna's intersection search space over finished and running trials (not trial number ``exclude``)."""
    space: dict[str, BaseDistribution] | None = None
    for t in trials:
        if t.state not in TAKEN or t.number == exclude or not t.distributions:
            continue
        d = t.distributions
        space = dict(d) if space is None else {k: v for k, v in space.items() if d.get(k) == v}
    return {k: v for k, v in sorted((space or {}).items()) if not v.single()}


class UniqueSampler(optuna.samplers.BaseSampler):
    """``base`` (a TPE or random sampler), never repeating a point another trial of the study holds (module doc).
    ``seed`` seeds the fallback's uniform choice among the points not yet tried."""

    def __init__(self, base: optuna.samplers.BaseSampler, seed: int | None = None, attempts: int = 16,
                 space_of: Callable[[optuna.Study], Mapping[str, BaseDistribution] | None] | None = None) -> None:
        self.base = base
        self.space_of = space_of
        self.attempts = int(attempts)
        self._rng = random.Random(seed)
        self.fallbacks = 0  # trials whose point came from the uniform fallback (for tests and diagnostics)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng.seed()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        # a finite space: every dimension the other trials (finished, and running ones with parameters: parallel
        # workers from the first trials on) share, so the whole point is chosen here, jointly; an infinite one: the
        # wrapped sampler's own (the wrapper then changes nothing)
        space = shared_space(study.get_trials(deepcopy=False), exclude=trial.number)
        current = self.space_of(study) if self.space_of is not None and space else None
        if current and space_size(current) is not None:  # the study's current space (module doc)
            space = {k: v for k, v in sorted(current.items()) if not v.single()}
        return space if space and space_size(space) is not None else self.base.infer_relative_search_space(study,
                                                                                                           trial)

    def _propose(self, study: optuna.Study, trial: FrozenTrial,
                 space: dict[str, BaseDistribution]) -> dict[str, Any]:
        base_space = self.base.infer_relative_search_space(study, trial)
        base_space = {k: d for k, d in base_space.items() if k in space}
        point = dict(self.base.sample_relative(study, trial, base_space)) if base_space else {}
        for k, d in space.items():
            if k not in point:
                point[k] = self.base.sample_independent(study, trial, k, d)
        return point

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space or space_size(search_space) is None:  # infinite: exactly the wrapped sampler
            return self.base.sample_relative(study, trial, search_space)
        taken = taken_keys(study.get_trials(deepcopy=False), search_space, exclude=trial.number)
        point: dict[str, Any] = {}
        for _ in range(max(1, self.attempts)):
            point = self._propose(study, trial, search_space)
            if point_key(point, search_space) not in taken:
                return point
        free = self._free_point(search_space, taken)
        if free is None:  # every point is taken: the wrapped sampler's (a repeat); the sweep stops on exhaustion
            return point
        self.fallbacks += 1
        return free

    def _free_point(self, space: dict[str, BaseDistribution], taken: set[tuple]) -> dict[str, Any] | None:
        names = sorted(space)
        values = [choices_of(space[k]) for k in names]
        if any(v is None for v in values):  # not reached: sample_relative handles infinite spaces first
            return None
        size = math.prod(len(v) for v in values)
        if size <= len(taken):
            return None
        if size <= ENUMERATE_MAX:
            free = [p for p in itertools.product(*values)
                    if point_key(dict(zip(names, p, strict=True)), space) not in taken]
            return dict(zip(names, self._rng.choice(free), strict=True)) if free else None
        for _ in range(10_000):  # a large space with few points taken: rejection sampling
            p = {k: self._rng.choice(v) for k, v in zip(names, values, strict=True)}
            if point_key(p, space) not in taken:
                return p
        return None

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        # the first trial (no shared space yet) and parameters outside the shared space
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)


__all__ = ["UniqueSampler", "choices_of", "contains", "point_key", "shared_space", "space_exhausted", "space_size", "taken_keys",
           "value_key"]
