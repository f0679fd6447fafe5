"""`bars export run_id=<id> format=onnx|torchscript [out=<dir>]` (`make export`): a recorded model for serving.

The run's model with its best weights (``bars.recorded``) is exported with one input tensor per field, in the
feature spec's order (categorical int32 ``[batch]``, numeric float32 ``[batch]``, sequence int32
``[batch, max_len]``: the encoded indices of ``bars.data.spec``), and two outputs, ``logit`` and ``probability``
(= sigmoid(logit)), both float32 ``[batch]``; a multi-task model's are ``[batch, tasks]``, one column per task in
the order ``signature.json`` lists (``outputs[].tasks``). The output folder holds:

- ``model.onnx`` (ONNX, opset :data:`ONNX_OPSET`) or ``model.pt`` (TorchScript, ``torch.jit.load``),
- ``signature.json``: inputs (name, type, dtype, shape, vocabulary size and file, min count, source), outputs,
  the index convention, the run, its data fingerprint and the parity check,
- ``vocab/<field>.parquet``: the vocabularies fitted on train (``value``, ``count``; row i = index 2 + i), copied
  from the dataset folder, to encode raw values (the dataset's raw transform, e.g. Criteo's bucketing, comes first:
  each input's ``source`` says what it is; ``bars predict`` does all of it),
- ``sample.npz``: the parity batch (``in/<field>``, ``out/logit``, ``out/probability``, ``names``), real rows
  of the run's test split, for a smoke test on the serving side.

Both formats are traced (``torch.onnx.export(dynamo=False)`` and ``torch.jit.trace``): the torch.export-based
ONNX exporter cannot export the embedding layer's data-dependent index range check, which tracing leaves out;
indices must lie in ``[0, vocab_size)``, which encoding with the vocabulary files guarantees. Every export is
verified before it is kept: its outputs must equal torch's within :data:`TOLERANCE` on the sample, all rows and
the first row alone, so the batch axis is truly dynamic (probability: absolute; logit: relative to
max(1, |logit|), as float32 keeps about 7 significant digits), or, where torch's own float32 outputs are further
than that from the exact ones (the same model in float64 on the same rows: an ill-conditioned computation, e.g. a
dot product of large vectors that cancels), within :data:`FLOAT32_FACTOR` times torch's own error
(:class:`Tolerance`): an export cannot be held closer to torch's float32 result than that result is to the exact
one. ONNX with onnxruntime (CPU), TorchScript by loading it in a fresh Python process (``bars/export_check.py``, no
bars code). Modules with an ``export_friendly`` switch (HFM's FFT-free circular convolution) use it while tracing
for ONNX. Models a format cannot express are listed in :data:`UNSUPPORTED` with the reason. The export is recorded in MLflow as a child run of the source run
(``stage=export``) with the folder's files as artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

FORMATS = ("onnx", "torchscript")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
SIGNATURE = "signature.json"
SAMPLE = "sample.npz"
TOLERANCE = 1e-5
# An export's error may reach this multiple of torch's own float32 error (against float64) where that is above
# TOLERANCE/FLOAT32_FACTOR: two float32 evaluations in different summation orders each carry about that error, so
# they can differ by twice it; the other factor 2 is margin for ONNX Runtime's blocked kernels, whose error against
# float64 was measured at up to 2.1x torch's (APG-DCNv2 with spread-out random weights; docs/predict-export.md).
FLOAT32_FACTOR = 4.0
ONNX_OPSET = 18
SAMPLE_ROWS = 1024
OUTPUTS = ("logit", "probability")
CHECK_SCRIPT = Path(__file__).with_name("export_check.py")

# Registered models (registry key) that a format cannot express, with the reason: `bars export` refuses them
# with the reason, and tests/test_export.py checks that every other registered model exports with parity.
UNSUPPORTED: dict[str, dict[str, str]] = {"onnx": {}, "torchscript": {}}


class ExportError(RuntimeError):
    """The model cannot be exported in that format, or the export does not reproduce torch's outputs."""


@dataclass(frozen=True)
class Tolerance:
    """The parity bound of one export: torch's own float32 error on the sample (its outputs against the same model
    in float64; logit: relative to max(1, |logit|), probability: absolute) and the bounds it gives."""

    float32_logit: float
    float32_probability: float

    @property
    def logit(self) -> float:
        return max(TOLERANCE, FLOAT32_FACTOR * self.float32_logit)

    @property
    def probability(self) -> float:
        return max(TOLERANCE, FLOAT32_FACTOR * self.float32_probability)


@dataclass
class ExportResult:
    run_id: str | None
    format: str
    out: Path
    model_file: Path
    logit_error: float  # max |diff| / max(1, |logit|)
    max_abs_probability: float
    rows: int
    seconds: float
    export_run_id: str | None = None
    tolerance: Tolerance | None = None


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    return fmt


def unsupported_reason(model_name: str, fmt: str) -> str | None:
    return UNSUPPORTED.get(check_format(fmt), {}).get(model_name)


def field_inputs(model: Any, names: list[str]) -> Any:
    """``model`` (a dict of field tensors -> logits) as a module of positional tensors, one per field in spec
    order, returning ``(logit, probability)``."""
    import torch
    from torch import nn

    class FieldInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.names = tuple(names)

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logit = output_logits(self.model(dict(zip(self.names, inputs)))).float()
            return logit, torch.sigmoid(logit)

    return FieldInputs().eval()


def output_logits(logit: Any) -> Any:
    """The exported logit: ``[batch]``, or ``[batch, tasks]`` for a multi-task model (one column per task, in the
    order of its ``tasks``: bars.objective.model_tasks)."""
    return logit if logit.dim() == 2 and logit.shape[1] > 1 else logit.reshape(-1)


def sample_batch(split: Any, names: list[str], rows: int = SAMPLE_ROWS) -> dict[str, Any]:
    """The first ``rows`` rows of a split as ``{field: tensor}`` (contiguous copies)."""
    n = min(rows, len(split))
    if n == 0:
        raise ExportError("the sample split has no rows")
    return {k: split.features[k][:n].contiguous().clone() for k in names}


def _torch_outputs(wrapper: Any, args: tuple) -> tuple[Any, Any]:
    import torch

    with torch.inference_mode():
        logit, prob = wrapper(*args)
    return logit.numpy(), prob.numpy()


def parity_tolerance(model: Any, sample: Mapping[str, Any], names: list[str], want: tuple[Any, Any]) -> Tolerance:
    """torch's own float32 error on the sample: ``want`` (the float32 outputs) against a float64 copy of ``model``
    on the same rows."""
    import copy

    import torch

    exact = copy.deepcopy(model).cpu().double().eval()
    with torch.inference_mode():
        logit = output_logits(exact({n: sample[n].double() if sample[n].is_floating_point() else sample[n]
                                     for n in names}))
        prob = torch.sigmoid(logit)
    return Tolerance(_diff(want[0], logit.numpy(), relative=True), _diff(want[1], prob.numpy()))


@contextmanager
def export_friendly(model: Any) -> Iterator[None]:
    """Switch on every ``export_friendly`` module of ``model`` (an exact formulation the exporter can express,
    e.g. HFM's circular convolution without FFT) for the ``with`` block; restored after."""
    mods = [m for m in model.modules() if hasattr(m, "export_friendly")]
    before = [m.export_friendly for m in mods]
    try:
        for m in mods:
            m.export_friendly = True
        yield
    finally:
        for m, b in zip(mods, before, strict=True):
            m.export_friendly = b


def _diff(got: Any, want: Any, *, relative: bool = False) -> float:
    """max |got - want|; ``relative``: each difference divided by max(1, |want|) (the logit error)."""
    import numpy as np

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ExportError(f"exported output has shape {got.shape}, torch's {want.shape}")
    err = np.abs(got - want)
    if relative:
        err = err / np.maximum(1.0, np.abs(want))
    return float(err.max()) if got.size else 0.0


def _export_onnx(wrapper: Any, args: tuple, names: list[str], path: Path) -> None:
    import torch

    axes = {n: {0: "batch"} for n in names} | {o: {0: "batch"} for o in OUTPUTS}
    with warnings.catch_warnings(), export_friendly(wrapper):
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated in favour of torch.export
        torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=names, output_names=list(OUTPUTS),
                          dynamic_axes=axes, opset_version=ONNX_OPSET)


def _verify_onnx(path: Path, sample: Mapping[str, Any], want: tuple[Any, Any]) -> tuple[float, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    used = [i.name for i in session.get_inputs()]
    diffs = [0.0, 0.0]
    for n in (len(want[0]), 1):
        out = session.run(list(OUTPUTS), {k: sample[k][:n].numpy() for k in used})
        for i in range(2):
            diffs[i] = max(diffs[i], _diff(out[i], want[i][:n], relative=i == 0))
    return diffs[0], diffs[1]


def _export_torchscript(wrapper: Any, args: tuple, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning: the embedding's range check is not part of the trace
        traced = torch.jit.trace(wrapper, args, check_trace=False)
    torch.jit.save(traced, str(path))


def verify_torchscript(pairs: list[tuple[Path, Path]], timeout: float = 600) -> list[dict]:
    """Load each ``(model.pt, sample.npz)`` in ONE fresh Python process (``export_check.py``, isolated mode,
    no bars code) and return its report per file."""
    if not pairs:
        return []
    args = [str(x) for pair in pairs for x in pair]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", str(CHECK_SCRIPT), *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(Path(pairs[0][0]).parent))
    if proc.returncode != 0:
        raise ExportError(f"loading the TorchScript file in a fresh process failed (exit {proc.returncode}): "
                          f"{proc.stderr.strip()[-2000:]}")
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if len(reports) != len(pairs):
        raise ExportError(f"the fresh-process check reported {len(reports)} files of {len(pairs)}: {proc.stdout}")
    for r in reports:
        if r["bars_imported"]:
            raise ExportError(f"{r['file']}: loading it imported bars code: the file is not self-contained")
    return reports


def save_sample(path: Path, sample: Mapping[str, Any], names: list[str], want: tuple[Any, Any]) -> None:
    import numpy as np

    from bars.fileio import atomic_write

    arrays = {f"in/{k}": sample[k].numpy() for k in names}
    arrays |= {"out/logit": want[0], "out/probability": want[1], "names": np.array(names)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def export_model(model: Any, spec: Any, fmt: str, out: Path, sample: Mapping[str, Any], *, model_name: str,
                 fresh_check: bool = True) -> tuple[Path, float, float, Tolerance]:
    """Export ``model`` (eval, CPU) into folder ``out`` as ``fmt``, save the sample with torch's outputs and check
    the export against them; returns (model file, max |diff| of logits, of probabilities, the parity bound). With
    ``fresh_check=False`` a TorchScript file is not loaded here: call :func:`verify_torchscript` and
    :func:`check_parity` (tests check many files in one process)."""
    check_format(fmt)
    reason = unsupported_reason(model_name, fmt)
    if reason:
        raise ExportError(f"{fmt} cannot express model {model_name!r}: {reason}")
    names = list(spec.names)
    wrapper = field_inputs(model.cpu().eval(), names)
    args = tuple(sample[n] for n in names)
    want = _torch_outputs(wrapper, args)
    tol = parity_tolerance(model, sample, names, want)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILES[fmt]
    save_sample(out / SAMPLE, sample, names, want)
    try:
        if fmt == "onnx":
            _export_onnx(wrapper, args, names, path)
        else:
            _export_torchscript(wrapper, args, path)
    except ExportError:
        raise
    except Exception as e:  # the exporter's own errors: say which model and what to do
        raise ExportError(f"exporting model {model_name!r} to {fmt} failed: {type(e).__name__}: {e}; if {fmt} cannot "
                          f"express it, list it with the reason in bars.export.UNSUPPORTED") from e
    if fmt == "onnx":
        d_logit, d_prob = _verify_onnx(path, sample, want)
    elif fresh_check:
        r = verify_torchscript([(path, out / SAMPLE)])[0]
        d_logit, d_prob = r["logit_error"], r["max_abs_probability"]
    else:
        return path, float("nan"), float("nan"), tol
    check_parity(model_name, fmt, d_logit, d_prob, tol)
    return path, d_logit, d_prob, tol


def check_parity(model_name: str, fmt: str, d_logit: float, d_prob: float, tol: Tolerance | None = None) -> None:
    tol = tol or Tolerance(0.0, 0.0)
    if not (d_logit <= tol.logit and d_prob <= tol.probability):
        raise ExportError(f"{fmt} export of {model_name!r} differs from torch: logit error {d_logit:.3g}, max |diff| "
                          f"probability {d_prob:.3g}; allowed {tol.logit:.3g} and {tol.probability:.3g} ({TOLERANCE}, "
                          f"or {FLOAT32_FACTOR:g}x torch's own float32 error against float64 on these rows: "
                          f"{tol.float32_logit:.3g} and {tol.float32_probability:.3g})")


def signature(rec: Any, fmt: str, model_file: Path, d_logit: float, d_prob: float, rows: int,
              vocab_files: Mapping[str, dict], tol: Tolerance) -> dict:
    """The JSON beside the model: how to call it and where it came from."""
    import torch

    from bars.data.spec import FIRST_KNOWN_INDEX, OOV_INDEX, PAD_INDEX
    from bars.fileio import file_digest
    from bars.objective import model_tasks

    tasks = model_tasks(rec.model)  # multi-task: outputs [batch, tasks], one column per task in this order
    inputs = []
    for f in rec.spec.features:
        entry: dict[str, Any] = {"name": f.name, "type": f.type,
                                 "dtype": "float32" if f.type == "numeric" else "int32",
                                 "shape": ["batch", f.max_len] if f.type == "sequence" else ["batch"],
                                 "source": f.source}
        if f.type == "numeric":
            entry["missing"] = 0.0
        else:
            entry |= {"vocab_size": f.vocab_size, "min_count": f.min_count, **vocab_files[f.name]}
        inputs.append(entry)
    versions: dict[str, str] = {"torch": torch.__version__}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "opset": str(ONNX_OPSET)}
    tags = rec.record.tags
    return {
        "format": fmt, "file": model_file.name, "sha256": file_digest(model_file, "sha256"),
        "inputs": inputs,
        "outputs": [{"name": o, "dtype": "float32", "shape": ["batch", len(tasks)] if tasks else ["batch"],
                     **({"tasks": list(tasks)} if tasks else {})} for o in OUTPUTS],
        "index_convention": {"padding_or_missing": PAD_INDEX, "out_of_vocabulary": OOV_INDEX,
                             "first_known": FIRST_KNOWN_INDEX,
                             "rule": "the value in row i of a field's vocabulary file has index first_known + i; a "
                                     "value not in the file is out_of_vocabulary; sequences are cut or padded with "
                                     "padding_or_missing at the end to max_len (the shape); every index must be "
                                     "< vocab_size"},
        "run": {"run_id": rec.run_id, "model": rec.model_label, "model_class": str(rec.cfg.model.name),
                **({"method": rec.method, "method_run": rec.method_run_id, "final_stage_run": rec.record.run_id,
                    "method_note": _method_note(rec.method)}
                   if rec.method else {}),
                "data": str(rec.cfg.data.name), "data_fingerprint": tags.get("data_fingerprint"),
                "seed": tags.get("seed"), "git_commit": tags.get("git_commit"),
                "test_auc": rec.record.metrics.get("test_auc")},
        "parity": {"rows": rows, "split": "test (first rows)", "logit_error": d_logit,
                   "logit_error_rule": "max |diff| / max(1, |logit|)",
                   "max_abs_probability": d_prob, "tolerance": TOLERANCE,
                   "allowed": {"logit_error": tol.logit, "max_abs_probability": tol.probability},
                   "float32_error": {"logit_error": tol.float32_logit, "max_abs_probability": tol.float32_probability},
                   "allowed_rule": f"max(tolerance, {FLOAT32_FACTOR:g} x float32_error), float32_error = torch's "
                                   "float32 outputs against the same model in float64 on these rows",
                   "checked_with": "onnxruntime CPUExecutionProvider" if fmt == "onnx" else
                   "torch.jit.load in a fresh Python process"},
        "versions": versions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _method_note(method: str) -> str:
    """What the exported model of a method run holds (the method module's ``BAKED_NOTE``, else its masks folded)."""
    import importlib

    from bars.methods import METHODS

    default = "the method's selection is folded into the backbone's embedding tables"
    entry = METHODS.get(method)
    return str(getattr(importlib.import_module(entry[1]), "BAKED_NOTE", default)) if entry else default


def _target_folder(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier export."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SIGNATURE).is_file())):
        raise ExportError(f"out={out} exists and is not a bars export folder (no {SIGNATURE}): choose another")


def export_run(run_id: str, fmt: str, current: DictConfig, *, out: str | Path | None = None, track: bool = True,
               say: Any = print) -> ExportResult:
    """Export run ``run_id`` (from the store at ``current.tracking.uri``) as ``fmt`` into ``out`` (default
    ``<paths.exports>/<run id>/<format>``), verified; recorded as a child run."""
    from bars.data.loader import load_dataset
    from bars.data.vocab import MANIFEST_KEY
    from bars.data.writer import atomic_dir
    from bars.recorded import child_run, load_recorded_run

    check_format(fmt)
    rec = load_recorded_run(run_id, current, say=say)
    out_dir = Path(out).expanduser().resolve() if out else Path(str(rec.cfg.paths.exports)) / run_id / fmt
    _target_folder(out_dir)
    reason = unsupported_reason(str(rec.cfg.model.name), fmt)
    if reason:
        raise ExportError(f"{fmt} cannot express model {rec.cfg.model.name!r}: {reason}")
    t0 = time.perf_counter()
    test = load_dataset(rec.folder, splits=("test",)).splits["test"]
    sample = sample_batch(test, rec.spec.names)
    tags = {"stage": "export", "source_run": run_id, "format": fmt,
            "model": rec.model_label, "model_class": str(rec.cfg.model.name),
            "data": str(rec.cfg.data.name), "data_fingerprint": rec.record.tags.get("data_fingerprint"),
            "output": str(out_dir)}
    with child_run(rec, track, f"export__{tags['model']}__{fmt}", tags,
                   {"export": {"format": fmt, "out": tags["output"]}}) as child:
        with atomic_dir(out_dir) as tmp:
            model_file, d_logit, d_prob, tol = export_model(rec.model, rec.spec, fmt, tmp, sample,
                                                       model_name=str(rec.cfg.model.name))
            vocab = {}
            for name, entry in json.loads((rec.folder / "manifest.json").read_text())[MANIFEST_KEY].items():
                dst = tmp / entry["file"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(rec.folder / entry["file"], dst)
                vocab[name] = {"vocab_file": entry["file"], "vocab_sha256": entry["sha256"],
                               "vocab_dtype": entry["dtype"]}
            sig = signature(rec, fmt, model_file, d_logit, d_prob, len(sample[rec.spec.names[0]]), vocab, tol)
            (tmp / SIGNATURE).write_text(json.dumps(sig, indent=2) + "\n")
        seconds = time.perf_counter() - t0
        result = ExportResult(run_id, fmt, out_dir, out_dir / MODEL_FILES[fmt], d_logit, d_prob,
                              sig["parity"]["rows"], seconds, getattr(child, "run_id", None), tol)
        if child is not None:
            child.set_tags({"model_sha256": sig["sha256"]})
            child.log_metrics({"parity_logit_error": d_logit, "parity_max_abs_probability": d_prob,
                               "parity_float32_logit_error": tol.float32_logit,
                               "parity_rows": result.rows, "export_seconds": seconds,
                               "model_bytes": result.model_file.stat().st_size})
            for p in sorted(out_dir.rglob("*")):
                if p.is_file():
                    rel = p.relative_to(out_dir).parent
                    child.log_artifact(p, f"export/{fmt}" + (f"/{rel}" if str(rel) != "." else ""))
    say(f"bars export: {rec.describe()} -> {result.model_file} ({fmt}; signature {out_dir / SIGNATURE}); parity on "
        f"{result.rows} test rows: logit error {d_logit:.2g}, max |diff| probability {d_prob:.2g} (<= {tol.logit:.2g}, "
        f"{tol.probability:.2g})"
        + (f"; recorded as MLflow run {result.export_run_id} (child of {run_id})" if result.export_run_id else ""))
    return result


def main() -> int:
    """``bars export run_id=<id> format=onnx|torchscript [out=<dir>]``."""
    from bars.config import hydra_command
    from bars.data.errors import DataError
    from bars.predict import PredictError, parse_options
    from bars.recorded import RecordedRunError

    try:
        opts, rest = parse_options(sys.argv[1:], ("run_id", "format", "out"), "export")
    except PredictError as e:
        print(str(e), file=sys.stderr)
        return 2
    if not opts.get("run_id") or not opts.get("format"):
        print("usage: bars export run_id=<MLflow run id> format=onnx|torchscript [out=<dir>]   "
              "(make export RUN=<id> FORMAT=onnx|torchscript [OUT=<dir>])", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *rest]
    return hydra_command("export", lambda cfg, _: export_run(opts["run_id"], opts["format"], cfg,
                                                             out=opts.get("out") or None) and 0,
                         (ExportError, RecordedRunError, DataError), error_code=1)


if __name__ == "__main__":
    raise SystemExit(main())
