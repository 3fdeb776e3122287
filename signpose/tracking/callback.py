"""The engine callback that streams a training into its MLflow run."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric

from signpose.tasks import get_task

log = logging.getLogger(__name__)

PANEL_KEY = "val_panel"
FINAL_PANEL_FILE = "panels/final_val_panel.png"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DistributedDataParallel / DataParallel keep the real model in .module.
    return getattr(model, "module", model)


def _as_batch(data, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
    if tensor.ndim < 2 or len(tensor) == 0:
        raise ValueError(f"{name}: expected a non-empty batch, got shape {tuple(tensor.shape)}")
    return tensor.float()


class MlflowCallback:
    """Per epoch: every metric (step = epoch) and the fixed validation panel as an MLflow image
    (``key='val_panel'``, so the UI's image slider shows its evolution); at the end the last panel
    again as a figure artifact (``panels/final_val_panel.png``) titled with the final metrics.

    ``panel_inputs`` / ``panel_targets`` are a fixed small batch of validation samples: model inputs
    ((N,143,3) keypoints for skeleton, (N,68,3) normalised faces for face) and targets ((N,1,S,S)
    images, or the faces again). They are chosen once so every epoch and every run shows the same
    samples. Works on the active run unless ``run_id`` is given.

    The uploads run on one background thread, in order, so a slow or retrying MLflow server does not
    hold rank 0 while the other ranks wait for it in the next collective (the panel's forward pass,
    a few samples, stays on the training thread: the weights change after it). An upload's error is
    raised at the next epoch end or at :meth:`on_train_end`, which waits for all of them.
    """

    def __init__(
        self,
        task: str,
        panel_inputs,
        panel_targets,
        *,
        run_id: str | None = None,
        client: MlflowClient | None = None,
        log_panel_every: int = 1,
        extra_panels: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> None:
        self.spec = get_task(task)  # an unknown task is refused here, before the run logs anything
        if run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise RuntimeError(
                    "MlflowCallback needs a run: start one with signpose.tracking.start_training_run(...) "
                    "or pass run_id="
                )
            run_id = active.info.run_id
        self.task = task
        self.run_id = run_id
        self.client = client or MlflowClient()
        self.panel_inputs = _as_batch(panel_inputs, "panel_inputs")
        self.panel_targets = _as_batch(panel_targets, "panel_targets")
        if len(self.panel_inputs) != len(self.panel_targets):
            raise ValueError(
                f"panel_inputs has {len(self.panel_inputs)} samples but panel_targets {len(self.panel_targets)}"
            )
        # name -> fixed (inputs, targets) of another evaluation set, logged as the image "<name>_panel"
        self.extra_panels = {name: (_as_batch(inputs, f"{name} inputs"), _as_batch(targets, f"{name} targets"))
                             for name, (inputs, targets) in (extra_panels or {}).items()}
        self.log_panel_every = max(1, int(log_panel_every))
        self.last_panel: np.ndarray | None = None
        self.last_metrics: dict[str, float] = {}
        self.last_epoch: int | None = None
        self._uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-upload")
        self._pending: list[Future] = []

    def _upload(self, fn, *args, **kwargs) -> None:
        self._pending.append(self._uploads.submit(fn, *args, **kwargs))

    def flush(self, wait: bool = True) -> None:
        """Raise the first failed upload; with ``wait``, wait for every pending one first."""
        pending, self._pending = self._pending, []
        for future in pending:
            if wait or future.done():
                future.result()
            else:
                self._pending.append(future)

    def render_panel(self, model: torch.nn.Module, inputs=None, targets=None) -> np.ndarray:
        """The panel of ``inputs``/``targets`` (default: the validation samples) with the model's outputs."""
        inputs = self.panel_inputs if inputs is None else inputs
        targets = self.panel_targets if targets is None else targets
        model = _unwrap(model)
        was_training = model.training
        device = next(model.parameters()).device
        model.eval()
        try:
            with torch.no_grad():
                outputs = model(inputs.to(device))
        finally:
            model.train(was_training)
        return self.spec.panel(inputs, targets, outputs)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float], model: torch.nn.Module) -> None:
        timestamp = int(time.time() * 1000)
        # "epoch" is the step already; everything else is a metric with a stable name.
        values = {key: float(value) for key, value in metrics.items() if key != "epoch"}
        skipped = [key for key, value in values.items() if not math.isfinite(value)]
        if skipped:
            # MLflow stores NaN, but a diverged epoch is worth a visible warning in the log too.
            log.warning("epoch %d: non-finite metrics %s", epoch, skipped)
        self.flush(wait=False)
        self._upload(self.client.log_batch, self.run_id,
                     metrics=[Metric(key, value, timestamp, int(epoch)) for key, value in values.items()])
        self.last_metrics = values
        self.last_epoch = int(epoch)
        if epoch % self.log_panel_every == 0:
            self.last_panel = self.render_panel(model)
            self._upload(self.client.log_image, self.run_id, self.last_panel, key=PANEL_KEY, step=int(epoch),
                         timestamp=timestamp)
            for name, (inputs, targets) in self.extra_panels.items():
                self._upload(self.client.log_image, self.run_id, self.render_panel(model, inputs, targets),
                             key=f"{name}_panel", step=int(epoch), timestamp=timestamp)

    def on_train_end(self, result: Any = None) -> None:
        self.flush()
        if self.last_panel is None:
            return
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        height, width = self.last_panel.shape[:2]
        figure = plt.figure(figsize=(width / 100, height / 100 + 0.5), dpi=100)
        axis = figure.add_axes((0, 0, 1, height / (height + 50)))
        axis.imshow(self.last_panel)
        axis.set_axis_off()
        summary = ", ".join(
            f"{key}={value:.4g}" for key, value in self.last_metrics.items() if key.startswith("val/")
        )
        figure.suptitle(f"{self.task}, epoch {self.last_epoch}\n{summary}", fontsize=7)
        try:
            self.client.log_figure(self.run_id, figure, FINAL_PANEL_FILE)
        finally:
            plt.close(figure)
