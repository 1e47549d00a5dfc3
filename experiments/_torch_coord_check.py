"""PyTorch side of ``bench_coord_check.py``, run in its own environment (``torch==2.13.0`` and
``mup==1.0.0`` installed with ``--no-deps``, plus ``pandas``; no jax):
``python _torch_coord_check.py '<config json>'`` builds mup's example MLP (``examples/MLP``:
Linear(3072, w), ReLU, Linear(w, w), ReLU, MuReadout(w, 10), no biases, LeCun-normal hidden
init, zero readout) at each width, with base shapes from widths ``base`` and ``base + 1``,
times one ``mup.coord_check.get_coord_data`` call end to end, and prints one JSON line."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main(cfg: dict[str, Any]) -> dict[str, Any]:
    import mup
    import torch
    from mup.coord_check import get_coord_data
    from torch import nn

    class MLP(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.fc_1 = nn.Linear(cfg["d_in"], width, bias=False)
            self.fc_2 = nn.Linear(width, width, bias=False)
            self.fc_3 = mup.MuReadout(width, 10, bias=False)
            nn.init.kaiming_normal_(self.fc_1.weight, a=1, mode="fan_in")
            nn.init.kaiming_normal_(self.fc_2.weight, a=1, mode="fan_in")
            nn.init.zeros_(self.fc_3.weight)

        def forward(self, x):
            return self.fc_3(torch.relu(self.fc_2(torch.relu(self.fc_1(x)))))

    base, delta = MLP(cfg["base"]), MLP(cfg["base"] + 1)

    def lazy(width: int):
        return lambda: mup.set_base_shapes(MLP(width), base, delta=delta)

    # One optimizer built untimed: torch.optim imports its compiler stack on first use.
    (mup.MuSGD if cfg["optimizer"] == "sgd" else mup.MuAdam)(
        lazy(cfg["base"])().parameters(), lr=0.1
    )
    torch.manual_seed(0)
    x = torch.randn(cfg["batch"], cfg["d_in"])
    y = torch.randint(0, 10, (cfg["batch"],))
    loader = [(x, y)]
    models = {w: lazy(w) for w in cfg["widths"]}
    t = time.perf_counter()
    df = get_coord_data(
        models,
        loader,
        optimizer=cfg["optimizer"],
        lr=cfg["lr"],
        mup=True,
        nsteps=cfg["steps"],
        nseeds=cfg["seeds"],
        flatten_input=True,
        cuda=False,
        show_progress=False,
    )
    total = time.perf_counter() - t
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "end_to_end_s": total,
        "rows": len(df),
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
