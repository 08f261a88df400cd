"""Where metrics go: ``metrics.jsonl`` always, TensorBoard and Weights & Biases when enabled.

Only the process that owns logging (rank 0) creates one; the others pass ``enabled=False``.
TensorBoard and wandb are imported only when switched on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger"]


class MetricsLogger:
    def __init__(
        self,
        output_dir: Path,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "reward3d",
        run_config: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self._tensorboard = None
        self._wandb = None
        self._jsonl = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(output_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise RuntimeError("logging.wandb is on but wandb is not installed (pip install wandb)") from None
            self._wandb = wandb_module.init(project=wandb_project, config=run_config or {}, dir=str(output_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None and isinstance(v, (int, float))}
        self._jsonl.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else None) for k, v in clean.items()}}) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            for key, value in clean.items():
                if math.isfinite(value):
                    self._tensorboard.add_scalar(key, value, global_step=step)
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
