"""A recorded run, ready to use: its config, its data's fitted preprocessing and its model with the best weights.

What ``bars predict`` and ``bars export`` start from. :func:`load_recorded_run` reads the run through
``bars.records`` (the read side of MLflow): it must have FINISHED and recorded its resolved config
(``config.yaml``), the fingerprint of its data and its best checkpoint (``checkpoints/<run id>/best.pt``, checked
against the run's ``checkpoint_sha256`` tag when it has one). The config is upgraded and rebased exactly as
``bars reproduce`` does (paths and tracking from the current project); the dataset is prepared with it (reused
when the folder exists) and must give the run's fingerprint, so the vocabularies are the ones the run trained on.

A method run (``bars.methods``: a parent run tagged ``method``, one child run per stage) is used through its final
stage's run, which holds the config, the data fingerprint and the checkpoint: the parent's id or the final
stage's both work (another stage's is refused, naming the two). The final stage's model is rebuilt through the
method's ``final_model`` hook, its checkpoint loaded, then baked (``bake()``: the method's masks folded into the
backbone's embedding tables), so :attr:`RecordedRun.model` is a plain backbone that scores exactly as the method's
final model did (OptInter's: the backbone rebuilt with its pair slots, the architecture read from the checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from bars.config import to_container

if TYPE_CHECKING:
    from torch import nn

    from bars.data.engine import Recipe
    from bars.data.spec import FeatureSpec
    from bars.records import RunRecord


class RecordedRunError(RuntimeError):
    """The run cannot be used as recorded (unknown, not finished, no config, other data, no checkpoint)."""


@dataclass
class RecordedRun:
    run_id: str
    record: RunRecord
    cfg: DictConfig  # the recorded config, upgraded to today's layout, paths/tracking of this project
    folder: Path  # the prepared dataset folder (the run's fingerprint)
    recipe: Recipe
    spec: FeatureSpec
    checkpoint: Path
    model: nn.Module  # eval mode, on CPU, best weights loaded (a method run's: baked, see the module doc)
    method: str | None = None  # a method run: the method's name (``record`` is then its final stage's run)
    method_run_id: str | None = None  # a method run: the method's (parent) run id

    @property
    def model_label(self) -> str:
        """``<model id>``, or ``<backbone>+<method>`` for a method run (its leaderboard row)."""
        base = self.record.tags.get("model", str(self.cfg.model.id))
        return f"{base}+{self.method}" if self.method else base

    @property
    def uri(self) -> str:
        return str(self.cfg.tracking.uri)

    @property
    def experiment(self) -> str:
        return self.record.experiment

    def describe(self) -> str:
        t = self.record.tags
        via = f", through its final stage run {self.record.run_id}" if self.record.run_id != self.run_id else ""
        return (f"run {self.run_id} ({self.model_label} on {t.get('data', self.cfg.data.name)}, "
                f"seed {t.get('seed', self.cfg.get('seed'))}, stage {self.record.stage or '?'}{via})")


def checkpoint_of(run_id: str, cfg: DictConfig, tags: dict[str, str]) -> Path:
    """``<paths.checkpoints>/<run id>/best.pt`` of this project, else the path the run recorded."""
    here = Path(str(cfg.paths.checkpoints)) / run_id / "best.pt"
    if here.is_file():
        return here
    recorded = tags.get("checkpoint")
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    raise RecordedRunError(f"run {run_id}: best checkpoint not found at {here}" +
                           (f" nor at the recorded {recorded}" if recorded and recorded != str(here) else "") +
                           " (checkpoints stay on the machine that trained the run: copy its checkpoints/<run id>/ "
                           "folder here)")


@dataclass(frozen=True)
class MethodRuns:
    """The runs of one method run: ``parent`` (the method's run, the leaderboard row), ``final`` (its final
    stage's run: config, data fingerprint, checkpoint; None while it has not finished) and ``given`` (the stage
    of the run asked for, None for the parent)."""

    method: str
    parent: str
    final: str | None
    given: str | None
    last_stage: str


def method_runs(run_id: str, uri: str) -> MethodRuns | None:
    """The method run ``run_id`` belongs to (its parent, or one of its stages' runs), None for a plain run."""
    from bars.methods import final_stage
    from bars.records import RecordsError, get_run

    try:
        rec = get_run(uri, run_id)
    except RecordsError as e:
        raise RecordedRunError(str(e)) from None
    method = rec.tags.get("method")
    if not method:
        return None
    try:
        last = final_stage(method)
    except ValueError as e:
        raise RecordedRunError(f"run {run_id}: {e}") from None
    if "method_stage_index" in rec.tags:  # one stage's child run
        parent = rec.tags.get("method_run") or rec.parent_run_id
        if not parent:
            raise RecordedRunError(f"run {run_id} is a {method} stage without its method run (no method_run tag)")
        if rec.stage == last:
            return MethodRuns(method, parent, run_id, rec.stage, last)
        try:
            final = get_run(uri, parent).tags.get("final_stage_run")
        except RecordsError as e:
            raise RecordedRunError(str(e)) from None
        return MethodRuns(method, parent, final, rec.stage, last)
    if rec.status != "FINISHED":
        raise RecordedRunError(f"{method} run {run_id} ended {rec.status}, not FINISHED: its final stage did not "
                               "finish (rerun the same config to resume it)")
    final = rec.tags.get("final_stage_run")
    if not final:
        raise RecordedRunError(f"{method} run {run_id} records no final_stage_run tag: cannot find its checkpoint")
    return MethodRuns(method, run_id, final, None, last)


def method_source(run_id: str, uri: str) -> tuple[str, str | None, str | None]:
    """``(run holding the checkpoint, method, method run id)`` for ``run_id``: ``(run_id, None, None)`` for a
    plain run; a method's parent run or its final stage's run gives the final stage's run. Another stage of a
    method (its weights are not the method's result) or a method run that did not finish raise."""
    m = method_runs(run_id, uri)
    if m is None:
        return run_id, None, None
    if m.given is not None and m.given != m.last_stage:
        raise RecordedRunError(f"run {run_id} is the {m.given!r} stage of {m.method} run {m.parent}: its weights are "
                               f"not the method's result; use the method run {m.parent} or its {m.last_stage!r} "
                               f"stage's run" + (f" {m.final}" if m.final else ""))
    assert m.final is not None
    return m.final, m.method, m.parent


def load_recorded_run(run_id: str, current: DictConfig, *, say: Any = None) -> RecordedRun:
    """Read run ``run_id`` from the store at ``current.tracking.uri`` and rebuild what it trained (a method run:
    its final stage's model, baked; see the module doc)."""
    from bars.data.prepare import load_recipe, prepare
    from bars.data.spec import FeatureSpec
    from bars.data.writer import SPEC
    from bars.fileio import file_digest
    from bars.models import build
    from bars.reproduce import data_fingerprint, finished_run_config
    from bars.train import load_checkpoint

    say = say or (lambda *_: None)
    source, method, method_run = method_source(run_id, str(current.tracking.uri))
    rec, cfg = finished_run_config(source, current, RecordedRunError, "its best weights are not a result")
    # the run's experiment (a store may hold it under another name than its data's)
    cfg.tracking.experiment = rec.experiment or cfg.tracking.experiment

    folder = Path(prepare(cfg, quiet=True))
    want, got = rec.tags.get("data_fingerprint"), data_fingerprint(folder)
    if not want:
        raise RecordedRunError(f"run {run_id} has no data_fingerprint tag: cannot tell which data it trained on")
    if got != want:
        raise RecordedRunError(
            f"data fingerprint mismatch: run {run_id} trained on data {want}, but preparing {cfg.data.name} with its "
            f"recorded config gives {got} ({folder}): the raw files or the preprocessing code differ from the "
            f"run's; restore them or check out the run's commit {rec.tags.get('git_commit', '?')}")

    ckpt = checkpoint_of(source, cfg, rec.tags)
    want_sha = rec.tags.get("checkpoint_sha256")
    if want_sha and file_digest(ckpt, "sha256") != want_sha:
        raise RecordedRunError(f"{ckpt}: sha256 differs from the run's checkpoint_sha256 tag {want_sha}: not the "
                               f"weights run {source} recorded")
    spec = FeatureSpec.load(folder / SPEC)
    model = build(str(cfg.model.name), spec, to_container(cfg.model.params))
    if method:  # the final stage's wrapper, as its checkpoint holds it; baked below
        from bars.methods import final_model
        from bars.methods.wrapper import BakeError

        try:
            model = final_model(cfg, model, spec, checkpoint=ckpt)
        except (NotImplementedError, ValueError) as e:
            raise RecordedRunError(f"run {run_id} ({method}): {e}") from None
    try:
        load_checkpoint(model, ckpt, map_location="cpu")
    except (RuntimeError, KeyError) as e:
        raise RecordedRunError(f"{ckpt}: does not fit model {cfg.model.name}{'+' + method if method else ''} built "
                               f"from the run's config: {e}") from None
    if method:
        try:
            model = model.bake().model
        except BakeError as e:
            raise RecordedRunError(f"run {run_id} ({method} over {cfg.model.id}): its selection cannot be baked "
                                   f"into the backbone: {e}") from None
    model.eval()
    say(f"{rec.tags.get('model', cfg.model.id)}{'+' + method if method else ''} from run {run_id}: data "
        f"{cfg.data.name} ({got}), checkpoint {ckpt}")
    return RecordedRun(run_id, rec, cfg, folder, load_recipe(cfg), spec, ckpt, model, method, method_run)


@contextmanager
def child_run(rec: Any, track: bool, name: str, tags: dict, params: dict) -> Iterator[Any]:
    """An MLflow child run of the recorded run ``rec`` (bars predict / export), yielding the tracker's run;
    ``track=False``: no run, yields None."""
    if not track:
        yield None
        return
    from bars.tracking import Tracker

    with Tracker(rec.uri, rec.experiment).run(name, tags=tags, params=params, parent_run_id=rec.run_id) as run:
        yield run
