"""PyTorch side of ``bench_lsuv.py``, run in its own environment (``torch==2.13.0`` and
``lsuv==0.3.0``, no jax): ``python _torch_lsuv.py '<config json>'`` builds the same model as the
benchmark, times its forward pass (median of ``repeats``) and one ``lsuv_with_singlebatch`` call
on a fresh model, and prints one JSON line."""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any


def _model(cfg: dict[str, Any], torch: Any):
    nn = torch.nn
    if cfg["model"].startswith("mlp"):  # PyTorch has one form of the MLP
        layers = []
        for _ in range(cfg["depth"]):
            layers += [nn.Linear(cfg["width"], cfg["width"]), nn.ReLU()]
        return nn.Sequential(*layers), torch.randn(cfg["batch"], cfg["width"])
    chans, kernels, layers, c_in = (32, 64, 128, 128), (5, 3, 3, 3), [], 3
    for c, k in zip(chans, kernels, strict=True):
        layers += [nn.Conv2d(c_in, c, k, stride=2, padding=k // 2), nn.ReLU()]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10)]
    return nn.Sequential(*layers), torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"])


def main(cfg: dict[str, Any]) -> dict[str, Any]:
    import lsuv
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model, x = _model(cfg, torch)
    model, x = model.to(device), x.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        model(x)
        sync()
        times = []
        for _ in range(cfg["repeats"]):
            t = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - t)
    forward = statistics.median(times)
    t = time.perf_counter()
    lsuv.lsuv_with_singlebatch(model, x, verbose=False, device=device)
    sync()
    total = time.perf_counter() - t
    return {
        "device": str(device),
        "torch": torch.__version__,
        "lsuv_package": getattr(lsuv, "__version__", "0.3.0"),
        "threads": torch.get_num_threads(),
        "lsuv_s": total,
        "forward_s": forward,
        "ratio": total / forward,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
