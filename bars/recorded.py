"""A recorded run, ready to use: its config, its data's fitted preprocessing and its model with the best weights.

What ``bars predict`` and ``bars export`` start from. :func:`load_recorded_run` reads the run through
``bars.records`` (the read side of MLflow): it must have FINISHED and recorded its resolved config
(``config.yaml``), the fingerprint of its data and its best checkpoint (``checkpoints/<run id>/best.pt``, checked
against the run's ``checkpoint_sha256`` tag when it has one). The config is upgraded and rebased exactly as
``bars reproduce`` does (paths and tracking from the current project); the dataset is prepared with it (reused
when the folder exists) and must give the run's fingerprint, so the vocabularies are the ones the run trained on.
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
    model: nn.Module  # eval mode, on CPU, best weights loaded

    @property
    def uri(self) -> str:
        return str(self.cfg.tracking.uri)

    @property
    def experiment(self) -> str:
        return self.record.experiment

    def describe(self) -> str:
        t = self.record.tags
        return (f"run {self.run_id} ({t.get('model', self.cfg.model.id)} on {t.get('data', self.cfg.data.name)}, "
                f"seed {t.get('seed', self.cfg.get('seed'))}, stage {self.record.stage or '?'})")


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


def load_recorded_run(run_id: str, current: DictConfig, *, say: Any = None) -> RecordedRun:
    """Read run ``run_id`` from the store at ``current.tracking.uri`` and rebuild what it trained."""
    from bars.data.prepare import load_recipe, prepare
    from bars.data.spec import FeatureSpec
    from bars.data.writer import SPEC
    from bars.fileio import file_digest
    from bars.models import build
    from bars.reproduce import data_fingerprint, finished_run_config
    from bars.train import load_checkpoint

    say = say or (lambda *_: None)
    rec, cfg = finished_run_config(run_id, current, RecordedRunError, "its best weights are not a result")
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

    ckpt = checkpoint_of(run_id, cfg, rec.tags)
    want_sha = rec.tags.get("checkpoint_sha256")
    if want_sha and file_digest(ckpt, "sha256") != want_sha:
        raise RecordedRunError(f"{ckpt}: sha256 differs from the run's checkpoint_sha256 tag {want_sha}: not the "
                               f"weights run {run_id} recorded")
    spec = FeatureSpec.load(folder / SPEC)
    model = build(str(cfg.model.name), spec, to_container(cfg.model.params))
    try:
        load_checkpoint(model, ckpt, map_location="cpu")
    except (RuntimeError, KeyError) as e:
        raise RecordedRunError(f"{ckpt}: does not fit model {cfg.model.name} built from the run's config: {e}") \
            from None
    model.eval()
    say(f"{rec.tags.get('model', cfg.model.id)} from run {run_id}: data {cfg.data.name} ({got}), checkpoint {ckpt}")
    return RecordedRun(run_id, rec, cfg, folder, load_recipe(cfg), spec, ckpt, model)


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
