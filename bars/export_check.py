"""Standalone check of exported TorchScript files, run by ``bars export`` in a fresh Python process.

``python -I bars/export_check.py <model.pt> <sample.npz> [<model.pt> <sample.npz> ...]`` loads each file with
``torch.jit.load`` (no bars code: this script imports only json, sys, numpy and torch, and reports whether any
``bars`` module got imported anyway), feeds it the inputs saved in the sample (``in/<field>`` arrays, in the order
of the ``names`` array) on all rows and on the first row alone, and prints one JSON line per file with the largest
differences from the saved torch outputs: ``max_abs_probability`` (``out/probability``) and ``logit_error``, the
largest |difference| of ``out/logit`` divided by max(1, |logit|) (float32 keeps about 7 significant digits, so a
logit of 100 cannot be checked to 1e-5 absolute).
"""

import json
import sys

import numpy as np
import torch


def check(model_path: str, sample_path: str) -> dict:
    model = torch.jit.load(model_path, map_location="cpu")
    model.eval()
    sample = np.load(sample_path)
    names = [str(n) for n in sample["names"]]
    diffs = {"logit": 0.0, "probability": 0.0}
    rows = int(sample["out/logit"].shape[0])
    for n in (rows, 1):
        inputs = [torch.from_numpy(np.ascontiguousarray(sample[f"in/{name}"][:n])) for name in names]
        with torch.inference_mode():
            logit, probability = model(*inputs)
        for key, got in (("logit", logit), ("probability", probability)):
            want = sample[f"out/{key}"][:n]
            if tuple(got.shape) != want.shape:
                raise SystemExit(f"{model_path}: {key} has shape {tuple(got.shape)}, expected {want.shape}")
            err = np.abs(got.numpy().astype(np.float64) - want)
            if key == "logit":  # float32 keeps ~7 digits: a logit's error is counted relative to max(1, |logit|)
                err = err / np.maximum(1.0, np.abs(want.astype(np.float64)))
            diffs[key] = max(diffs[key], float(err.max()) if err.size else 0.0)
    return {"file": model_path, "rows": rows, "logit_error": diffs["logit"],
            "max_abs_probability": diffs["probability"],
            "bars_imported": any(m == "bars" or m.startswith("bars.") for m in sys.modules)}


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print("usage: export_check.py <model.pt> <sample.npz> [...]", file=sys.stderr)
        return 2
    for i in range(0, len(argv), 2):
        print(json.dumps(check(argv[i], argv[i + 1])), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
