"""`bars reproduce run_id=<id>` (`make reproduce RUN=<id>`): rerun one MLflow run exactly and compare metrics.

1. Read the run's recorded resolved config (its ``config.yaml`` artifact) and tags from MLflow.
2. Rebase machine-specific paths: ``paths.*`` and ``tracking.*`` come from the current project (so a run
   recorded on another clone or machine reruns here); any other recorded string value that starts with the
   recorded ``paths.root`` is moved under the current one (e.g. ``data.raw_dir``). Everything else — model,
   data, train, seed — is exactly as recorded; overriding it is refused. A recorded config without
   ``train.loss`` (older than that key) gets ``bce_logits``, the loss those runs trained with.
3. Prepare the data with that config and check its fingerprint against the run's ``data_fingerprint`` tag.
4. Rerun with tracking (tags ``stage=reproduce``, ``reproduce_of=<id>``), print the original and new metrics
   side by side with |diff|, and exit 1 when they differ on CPU (where they must be identical), 0 otherwise.

A method run (``bars.methods``; the id of its parent run or of any of its stages' runs) is reproduced whole: every
stage rerun from the config its final stage recorded, in a fresh work folder (the recorded run's folder is never
resumed from), and the new method run's metrics compared with the recorded method run's, the method's own size
figures (``*_kept``, ``*_kept_count``, ``*_total``, ``params_effective``) and each stage's epochs included.
"""

from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from bars import metrics

if TYPE_CHECKING:
    from bars.run import RunResult

# Compared: the run's outcome, i.e. val_<m> and test_<m> of every registered metric either run recorded, then
# these. Timing metrics (seconds per epoch, samples/s) are shown but never compared.
COMPARED_RUN_KEYS = ("epochs", "best_epoch", "n_params")
SHOWN = ("seconds_per_epoch", "samples_per_s_mean")


def compared_keys(old: Mapping[str, float], new: Mapping[str, float]) -> tuple[str, ...]:
    """The metric keys a reproduction must match: val_* then test_* of the registry, as recorded, then the run's
    epochs, best epoch and parameter count."""
    keys = [k for split in ("val", "test") for k in metrics.metric_keys(split) if k in old or k in new]
    return (*keys, *COMPARED_RUN_KEYS)
ALLOWED_OVERRIDE_PREFIXES = ("run_id", "+run_id", "paths.", "tracking.", "hydra.")
LEGACY_LOSS = "bce_logits"  # the loss of every run recorded before the `train.loss` key existed


class ReproduceError(RuntimeError):
    """The run cannot be reproduced as recorded (missing config, other data, unknown run)."""


@dataclass
class Comparison:
    run_id: str
    new_run_id: str | None
    rows: list[tuple[str, float | None, float | None, float | None]]  # metric, original, new, |diff|
    device: str
    identical: bool

    @property
    def ok(self) -> bool:
        """Identical, or not on CPU (GPU kernels may be non-deterministic; the table still shows |diff|)."""
        return self.identical or not self.device.startswith("cpu")


def upgrade_recorded_config(rec: dict[str, Any]) -> dict[str, Any]:
    """A config recorded by an earlier layout, in today's: the same run, the same data bytes.

    - ``data.protocol_seed`` / ``data.embedding_dim`` (before the protocol block) -> ``protocol.seed`` /
      ``protocol.embedding_dim``: left in ``data`` they would enter the data fingerprint;
    - no ``model.id`` (before model identity) -> the registry key, which was the config's name; no
      ``model.bars_name`` -> null;
    - no ``data.recipe`` (before recipes were named by config) -> the recipe the dataset's config names today
      (a name of code, not fingerprinted: the engine's FORMAT_VERSION guards the bytes);
    - no ``data.missing`` (before the missing-value rule) -> ``padding``, the encoding such runs trained on
      (a padding rule leaves the fingerprint as it was);
    - model params that today's model configs refuse as keys the model would ignore (issue 9), nulled or removed
      (they had no effect when the run was recorded): LR's ``embedding_dim``; the MLP keys of a model without
      its MLP; FinalMLP's feature-selection keys without ``use_fs``; plain AutoInt's ``dropout`` next to
      ``attention_dropout`` (then a separate rate). A FinalMLP run without ``fs_context_bias_init`` started its
      empty-context biases N(0, 1): ``normal``. (Model changes made for FuxiCTR fidelity that have no switch,
      e.g. DeepFM's LR bias, AutoInt's separate Q/K/V init, FinalMLP's fusion bias, make such a run replay with
      different numbers; docs/fidelity.md section 3.)
    A config recorded in today's layout is returned unchanged."""
    rec = dict(rec)
    data = dict(rec.get("data") or {})
    protocol = dict(rec.get("protocol") or {})
    for old, new in (("protocol_seed", "seed"), ("embedding_dim", "embedding_dim")):
        if old in data:
            protocol.setdefault(new, data.pop(old))
    model = dict(rec.get("model") or {})
    if model and "id" not in model:
        model["id"] = model.get("name")
    if model and "bars_name" not in model:
        model["bars_name"] = None
    if model and isinstance(model.get("params"), dict):
        model["params"] = upgrade_model_params(str(model.get("name")), model["params"])
    if data and "recipe" not in data:
        from bars.config import CONF_DIR

        path = CONF_DIR / "data" / f"{data.get('name')}.yaml"
        if not path.is_file():
            raise ReproduceError(f"the run's dataset {data.get('name')!r} has no config here ({path}), so its "
                                 f"recipe is unknown")
        data["recipe"] = OmegaConf.load(path).data.recipe
    if data and "missing" not in data:
        data["missing"] = "padding"
    out = {**rec, "data": data, "model": model} if model else {**rec, "data": data}
    if protocol:
        out["protocol"] = protocol
    return out


_MLP_KEYS = ("activation", "batch_norm", "dropout")


def upgrade_model_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Recorded ``model.params`` of registry model ``name`` without the keys today's config refuses because the
    model ignored them (see :func:`upgrade_recorded_config`); params in today's form are returned unchanged."""
    p = dict(params)

    def null(*keys: str) -> None:
        for k in keys:
            if k in p and p[k] not in (None, [], ()):
                p[k] = None

    units_key = "hidden_units" if name in ("dnn", "widedeep", "deepfm") else "dnn_hidden_units"
    if name == "lr":
        p.pop("embedding_dim", None)
    elif name in ("dnn", "widedeep", "deepfm", "dcn", "xdeepfm") and not p.get(units_key):
        null(*_MLP_KEYS)
    elif name == "dcnv2" and p.get("model_structure") == "crossnet_only":
        null("dnn_hidden_units", *_MLP_KEYS)
    elif name == "autoint" and p.get("use_dnn") is False:
        null("dnn_hidden_units", "activation", "batch_norm")
        if p.get("attention_dropout") is not None:
            null("dropout")
    elif name == "finalmlp":
        if p.get("use_fs") is False:
            null("fs_hidden_units")
            for k in ("fs1_context", "fs2_context"):
                if p.get(k):
                    p[k] = []
        elif "fs_context_bias_init" not in p and p.get("use_fs", True):
            has_bias = not (p.get("fs1_context") and p.get("fs2_context"))
            p["fs_context_bias_init"] = "normal" if has_bias else "zeros"
        p.setdefault("fs_context_bias_init", "zeros")
    return p


def rebase_config(recorded: Mapping[str, Any] | DictConfig, current: DictConfig) -> DictConfig:
    """The recorded config with ``paths``/``tracking`` taken from ``current`` and paths under the recorded
    project root moved under the current one. The experiment stays the recorded one."""
    rec = OmegaConf.to_container(OmegaConf.create(recorded), resolve=True) \
        if not isinstance(recorded, DictConfig) else OmegaConf.to_container(recorded, resolve=True)
    cur_paths = OmegaConf.to_container(current.paths, resolve=True)
    cur_tracking = OmegaConf.to_container(current.tracking, resolve=True)
    old_root = str((rec.get("paths") or {}).get("root") or "")
    new_root = str(cur_paths.get("root") or "")

    def move(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        if isinstance(v, list):
            return [move(x) for x in v]
        if isinstance(v, str) and old_root and new_root and (v == old_root or v.startswith(old_root + "/")):
            return new_root + v[len(old_root):]
        return v

    out = {k: move(v) for k, v in rec.items() if k not in ("paths", "tracking")}
    train = out.get("train")
    if isinstance(train, dict) and "loss" not in train:
        # runs recorded before `train.loss` existed trained with BCE on logits (today's default is FuxiCTR's bce)
        out["train"] = {**train, "loss": LEGACY_LOSS}
    out["paths"] = cur_paths
    tracking = dict(cur_tracking)
    tracking["experiment"] = (rec.get("tracking") or {}).get("experiment") or (rec.get("data") or {}).get("name")
    tracking["enabled"] = True
    out["tracking"] = tracking
    return OmegaConf.create(out)


def data_fingerprint(folder: Path) -> str:
    """The fingerprint of a prepared folder: its manifest's, else the folder name (which carries it)."""
    import json

    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        if manifest.get("fingerprint"):
            return str(manifest["fingerprint"])
    except (OSError, ValueError):
        pass
    return Path(folder).name


METHOD_SUFFIXES = ("_kept", "_kept_count", "_total", "_epochs")  # a method's size figures, its stages' epochs


def method_keys(old: Mapping[str, float]) -> tuple[str, ...]:
    """What a method run's reproduction matches besides :func:`compared_keys`: the method's own size figures
    (``features_kept``, ``embedding_params_total``, ...), ``params_effective`` and each stage's epochs."""
    return tuple(k for k in sorted(old) if k.endswith(METHOD_SUFFIXES) or k == "params_effective")


def compare(old: Mapping[str, float], new: Mapping[str, float], device: str, run_id: str,
            new_run_id: str | None, extra: tuple[str, ...] = ()) -> Comparison:
    rows: list[tuple[str, float | None, float | None, float | None]] = []
    identical = True
    compared = compared_keys(old, new) + tuple(k for k in extra if k not in compared_keys(old, new))
    for key in compared + SHOWN:
        a, b = old.get(key), new.get(key)
        if a is None and b is None:
            continue
        diff = abs(a - b) if a is not None and b is not None else None
        if key in compared and (a is None or b is None or not (a == b or (math.isnan(a) and math.isnan(b)))):
            identical = False
        rows.append((key, a, b, diff))
    return Comparison(run_id, new_run_id, rows, device, identical)


def format_table(c: Comparison) -> str:
    def f(v: float | None) -> str:
        if v is None:
            return "—"
        return f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.10g}"

    lines = [f"original run:   {c.run_id}", f"reproduced run: {c.new_run_id or '(untracked)'}",
             f"{'metric':<20} {'original':>18} {'reproduced':>18} {'|diff|':>12}"]
    for key, a, b, d in c.rows:
        mark = "  (timing, not compared)" if key in SHOWN else ""
        lines.append(f"{key:<20} {f(a):>18} {f(b):>18} {('—' if d is None else f'{d:.3g}'):>12}{mark}")
    if c.identical:
        verdict = "identical"
    elif c.ok:
        verdict = f"differ (device {c.device}: GPU kernels may be non-deterministic)"
    else:
        verdict = f"DIFFER on {c.device}, where they must be identical"
    lines.append(f"result: {verdict}")
    return "\n".join(lines)


def finished_run_config(run_id: str, current: DictConfig, error: type[Exception], unfinished: str) -> tuple[Any, DictConfig]:
    """``(run record, config)`` of a FINISHED run of the store at ``current.tracking.uri``: its recorded
    config.yaml upgraded to today's layout and rebased on ``current``'s paths/tracking. Any problem raises
    ``error`` (the caller's error type); a run that did not finish says ``unfinished`` after why."""
    from bars.records import RecordsError, download_artifact, get_run

    uri = str(current.tracking.uri)
    try:
        run = get_run(uri, run_id)
    except RecordsError as e:
        raise error(str(e)) from None
    if run.status != "FINISHED":
        raise error(f"run {run_id} ended {run.status}, not FINISHED: {unfinished}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download_artifact(uri, run_id, "config.yaml", tmp)
        except RecordsError as e:
            raise error(f"run {run_id} recorded no resolved config (config.yaml artifact): {e}") from None
        recorded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return run, rebase_config(upgrade_recorded_config(recorded), current)


def reproduce(run_id: str, current: DictConfig, *, prepare_fn: Callable[[DictConfig], Path] | None = None,
              train_fn: Callable[..., Any] | None = None, out: Callable[[str], None] = print) -> Comparison:
    """Rerun MLflow run ``run_id`` (from the store at ``current.tracking.uri``) and compare its metrics."""
    from bars.recorded import RecordedRunError, method_runs
    from bars.records import RecordsError, get_run

    uri = str(current.tracking.uri)
    try:
        mruns = method_runs(run_id, uri)
    except RecordedRunError as e:
        raise ReproduceError(str(e)) from None
    asked = run_id
    if mruns is not None:  # a method run, whole: the parent's metrics, the final stage's config and tags
        run_id = mruns.parent
        try:
            parent = get_run(uri, run_id)
        except RecordsError as e:
            raise ReproduceError(str(e)) from None
        if parent.status != "FINISHED" or not mruns.final:
            raise ReproduceError(f"{mruns.method} run {run_id} ended {parent.status}"
                                 + ("" if mruns.final else " without a final stage") + ": nothing to compare against")
        stage_rec, cfg = finished_run_config(mruns.final, current, ReproduceError, "nothing to compare against")
        old = parent
        old_tags = {**parent.tags, **{k: v for k, v in stage_rec.tags.items()
                                      if k in ("data_fingerprint", "loader_train", "git_commit")}}
        if asked != run_id:
            out(f"bars reproduce: run {asked} is the {mruns.given!r} stage of {mruns.method} run {run_id}: "
                "reproducing the whole method")
    else:
        old, cfg = finished_run_config(run_id, current, ReproduceError, "nothing to compare against")
        old_tags = old.tags
    if old_tags.get("loader_train") in ("memory", "stream"):  # loader.mode=auto decided by the machine's memory:
        # train the way the run did (the two loaders shuffle differently; evaluation is the same either way)
        OmegaConf.update(cfg, "loader.mode", old_tags["loader_train"], force_add=True)
    out(f"bars reproduce: run {run_id} ({old.tags.get('model', '?')} on {old.tags.get('data', '?')}, seed "
        f"{cfg.get('seed')}, stage {old.stage or '?'}) from {uri}")
    from bars.validate import validate

    validate(cfg, "reproduce")  # the recorded config, upgraded, before anything is prepared or trained

    if prepare_fn is None:
        from bars.data.prepare import prepare as prepare_fn
    folder = Path(prepare_fn(cfg))
    want = old_tags.get("data_fingerprint")
    got = data_fingerprint(folder)
    if not want:
        raise ReproduceError(f"run {run_id} has no data_fingerprint tag: cannot check its data")
    if got != want:
        raise ReproduceError(
            f"data fingerprint mismatch: run {run_id} trained on data {want}, but preparing "
            f"{cfg.data.name} with its recorded config gives {got} ({folder}). The raw files or the "
            f"preprocessing code differ from the run's; restore them (see datasets/{cfg.data.name}/README.md) "
            f"or check out the run's commit {old_tags.get('git_commit', '?')}.")
    out(f"data fingerprint {got} matches")

    if train_fn is None and mruns is not None:  # every stage again, in a fresh work folder (never resumed)
        import functools
        import time

        from bars.methods.runner import run_method, work_folder

        base = work_folder(cfg)
        fresh = base.with_name(f"{base.name}__reproduce-{run_id}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        train_fn = functools.partial(run_method, folder=fresh)
    if train_fn is None:
        from bars.run import train_one as train_fn
    result: RunResult = train_fn(cfg, extra_tags={"stage": "reproduce", "reproduce_of": run_id})
    new_id = result.run_id
    if new_id:
        new = get_run(uri, new_id)
        new_metrics, device = new.metrics, new.tags.get("device", result.device)
    else:
        new_metrics, device = dict(result.metrics), result.device
    c = compare(old.metrics, new_metrics, str(device), run_id, new_id,
                method_keys(old.metrics) if mruns is not None else ())
    out(format_table(c))
    return c


def split_run_id(argv: list[str]) -> tuple[str | None, list[str]]:
    """Pull ``run_id=<id>`` out of the command line (it is not a config key); the rest are Hydra overrides."""
    run_id, rest = None, []
    for a in argv:
        if a.startswith(("run_id=", "+run_id=")):
            run_id = a.split("=", 1)[1]
        else:
            rest.append(a)
    return run_id, rest


def main() -> int:
    """``bars reproduce run_id=<id> [paths.*=... tracking.*=...]``."""
    from bars.config import hydra_command

    run_id, rest = split_run_id(sys.argv[1:])
    if not run_id:
        print("usage: bars reproduce run_id=<MLflow run id>   (make reproduce RUN=<id>)", file=sys.stderr)
        return 2
    bad = [a for a in rest if not a.startswith("-") and not a.startswith(ALLOWED_OVERRIDE_PREFIXES)]
    if bad:
        print(f"bars reproduce: {bad}: a reproduction reruns the recorded config exactly; only paths.* and "
              f"tracking.* may be overridden", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *rest]
    from bars.run import expected_errors

    return hydra_command("reproduce", lambda cfg, _: 0 if reproduce(run_id, cfg).ok else 1,
                         (ReproduceError, *expected_errors()), error_code=1)


if __name__ == "__main__":
    raise SystemExit(main())
