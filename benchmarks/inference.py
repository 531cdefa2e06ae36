"""Inference on the CPU: the teacher and every student, PyTorch eager against ONNX Runtime, at
batch 1 (latency) and batch 512 (throughput).

    python benchmarks/inference.py [--runs runs] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnxruntime
import torch
from common import median_seconds, print_table

from distill.export import export_onnx, load_model
from distill.report import collect_reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, nargs="+", default=[Path("runs")])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    rows = []
    for report in collect_reports(args.runs):
        if report.get("kind") == "twin":
            continue  # same network as its student
        model, name = load_model(Path(report["run"]))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, path)
            session = onnxruntime.InferenceSession(str(path), options,
                                                   providers=["CPUExecutionProvider"])
        figures = []
        for batch, calls in ((1, 200), (512, 3)):
            x = torch.randn(batch, 1, 28, 28)
            feed = {"image": x.numpy()}
            with torch.inference_mode():
                eager = median_seconds(lambda: [model(x) for _ in range(calls)],  # noqa: B023
                                       repeats=5) / calls
            onnx = median_seconds(lambda: [session.run(None, feed) for _ in range(calls)],  # noqa: B023
                                  repeats=5) / calls
            figures.append((eager, onnx))
        (e1, o1), (e512, o512) = figures
        rows.append([report["name"], name, f"{e1 * 1e3:.3f}", f"{o1 * 1e3:.3f}", f"{e1 / o1:.2f}x",
                     f"{512 / e512:,.0f}", f"{512 / o512:,.0f}", f"{e512 / o512:.2f}x"])
    if not rows:
        raise SystemExit(f"No finished runs in {', '.join(map(str, args.runs))}: train some "
                         "(distill teacher, distill student) or pass --runs.")
    print_table(f"CPU inference, {args.threads} threads, median of 5",
                ["run", "model", "eager b1 (ms)", "ONNX b1 (ms)", "ONNX speed-up b1",
                 "eager b512 (img/s)", "ONNX b512 (img/s)", "ONNX speed-up b512"], rows)


if __name__ == "__main__":
    main()
