"""Regenerate the MLflow UI screenshots in docs/images/ from real runs.

What it does, all on this machine:

1. starts ``mlflow server`` (``signpose.tracking.server.MlflowServer``: SQLite + an artifact folder
   under ``--workdir``, a port the kernel picks);
2. runs the pipeline as ``make run`` does (``pipelines.local_run.run_local``, the KFP DAG under
   ``kfp.local``: preprocess, then the skeleton and face trainings, each logging its data set with
   ``mlflow.log_input`` and registering its model), tracking to that server, then a second skeleton
   training on the same data set with another model size through the pipeline's own stage call
   (``signpose.stages.train_task``), so there are two skeleton runs to compare and two versions of
   ``skeleton-generator``, one of them ``champion``;
3. opens the UI in headless Chromium (Debian's ``chromium``) through the DevTools protocol
   (websocket-client, already a runtime pin), waits until each page shows what it is taken for, and
   writes the PNGs:

   - ``mlflow_runs.png``: the skeleton experiment's runs table with its Datasets column;
   - ``mlflow_run_model.png``: a skeleton run's page with its logged model and that model's metrics;
   - ``mlflow_compare.png``: the two skeleton runs in MLflow's compare view;
   - ``mlflow_registry.png``: ``skeleton-generator``'s versions with the ``champion`` alias.

Regenerate (about 10-20 minutes on 2 busy cores, most of it training)::

    apt-get install -y chromium
    .venv/bin/python -m tools.screenshots            # writes docs/images/mlflow_*.png

``--workdir DIR`` keeps the server's store there; run again with the same ``--workdir`` and only what
the store does not hold yet is trained, which is handy when only the pictures change.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKELETON_MODEL = "skeleton-generator"
WIDTH = 1440
# The run sizes: make run's, a little smaller, so both trainings finish in minutes on 2 cores.
PIPELINE = dict(synthetic_videos=16, synthetic_frames_per_video=48, skeleton_epochs=4, face_epochs=3)
# The second skeleton run: a wider model on the same data set.
SECOND_SKELETON = {"d_model": 96, "n_layers": 2, "n_heads": 4, "decoder_channels": 96, "num_workers": 0,
                   "epochs": 4, "batch_size": 32}
log = logging.getLogger("screenshots")


# ---- the runs ---------------------------------------------------------------------------------------------

def produce_runs(workdir: Path, url: str) -> None:
    """The pipeline once, then a second skeleton training on its data set, all tracked to ``url``."""
    from mlflow import MlflowClient

    from pipelines.local_run import run_local
    from signpose import stages

    os.environ["MLFLOW_TRACKING_URI"] = url
    os.environ["SIGNPOSE_PROMOTION_LOCK"] = str(workdir / "locks")
    client = MlflowClient(url)
    if not skeleton_runs(client):
        run_local(workdir / "pipeline", **PIPELINE)
    if len(skeleton_runs(client)) < 2:
        first = skeleton_runs(client)[0]
        params = first.data.params  # the pipeline's learning rate and loss settings: only the size differs
        config = dict(SECOND_SKELETON, image_size=int(params["image_size"]), lr=float(params["lr"]),
                      use_weighted_loss=params["use_weighted_loss"] == "True",
                      hand_weight=float(params["hand_weight"]), face_weight=float(params["face_weight"]))
        stages.train_task("skeleton", first.data.params["manifest_uri"], url, config=config)


def skeleton_runs(client) -> list:
    experiment = client.get_experiment_by_name(skeleton_experiment_name())
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`signpose.task` = 'skeleton'",
                              order_by=["attributes.start_time ASC"])


def skeleton_experiment_name() -> str:
    from signpose.tracking import load_mlflow_settings

    return load_mlflow_settings(ROOT / "mlflow.yaml").task("skeleton").experiment


# ---- the browser --------------------------------------------------------------------------------------------

class Chromium:
    """Headless Chromium driven through the DevTools protocol on a port it picks itself."""

    def __init__(self, binary: str, height: int = 900):
        import websocket

        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={WIDTH},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port = self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120, suppress_origin=True)
        self.next_id = 0

    def _devtools_port(self, timeout_s: float = 60) -> int:
        # Chromium writes the port it bound (port 0 asked) into the profile once it listens.
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (active.exists() and active.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port (exit code {self.process.poll()})")
            time.sleep(0.1)
        return int(active.read_text().split()[0])

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, ready: str, height: int, timeout_s: float = 180) -> None:
        """Load ``url`` and wait until the JavaScript condition ``ready`` holds (the SPA has drawn what
        the picture is for), then until the page stops changing."""
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        self.wait_for(ready, timeout_s, url)
        self.wait_settled()

    def wait_for(self, condition: str, timeout_s: float = 180, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(f"(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"):
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText.slice(0, 1500) : ''")
                raise TimeoutError(f"{what}: not ready ({condition}) within {timeout_s:.0f} s; page text:\n{text}")
            time.sleep(0.25)

    def wait_settled(self, quiet_polls: int = 6) -> None:
        """Until the page's text and size stay the same for ``quiet_polls`` polls in a row (charts drawn,
        tables filled); bounded by a minute."""
        probe = "document.body.innerText.length + ':' + document.body.scrollHeight + ':' + " \
                "document.querySelectorAll('svg, canvas, img').length"
        last, same, deadline = None, 0, time.monotonic() + 60
        while same < quiet_polls and time.monotonic() < deadline:
            now = self.evaluate(probe)
            same = same + 1 if now == last else 0
            last = now
            time.sleep(0.25)

    def click(self, script: str) -> None:
        """Runs ``script`` (which must find an element and ``.click()`` it, returning true)."""
        if not self.evaluate(script):
            raise RuntimeError(f"nothing to click: {script}")

    def type_into(self, placeholder: str, text: str, ready: str) -> None:
        """Types ``text`` into the input showing ``placeholder`` (as React sees typing), then waits
        until ``ready`` holds."""
        self.click(f"""(() => {{
          const input = [...document.querySelectorAll('input')].find(i => i.placeholder === {json.dumps(placeholder)});
          if (!input) return false;
          Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(input, {json.dumps(text)});
          input.dispatchEvent(new Event('input', {{bubbles: true}}));
          return true;
        }})()""")
        self.wait_for(ready, what=f"typing {text!r} into {placeholder!r}")
        self.wait_settled()

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


def text_shown(*needles: str) -> str:
    """A JavaScript condition: the page's visible text holds every needle."""
    return " && ".join(f"document.body.innerText.includes({json.dumps(n)})" for n in needles)


CLOSE_ASSISTANT = """(() => {
  const panel = [...document.querySelectorAll('div')].find(d => d.innerText &&
      d.innerText.startsWith('MLflow Assistant') && d.querySelector('button[aria-label="Close"]'));
  if (!panel) return true;  // not open
  panel.querySelector('button[aria-label="Close"]').click();
  return true;
})()"""


# ---- the pictures ------------------------------------------------------------------------------------------

def take_screenshots(browser: Chromium, url: str, out: Path) -> list[Path]:
    from mlflow import MlflowClient

    client = MlflowClient(url)
    runs = skeleton_runs(client)
    if len(runs) < 2:
        raise RuntimeError(f"expected two skeleton runs on {url}, found {len(runs)}")
    experiment_id = runs[0].info.experiment_id
    champion = client.get_model_version_by_alias(SKELETON_MODEL, "champion")
    champion_run = next(r for r in runs if r.info.run_id == champion.run_id)
    written = []

    def shoot(name: str, page: str, ready: str, height: int, before=None) -> None:
        browser.open(f"{url}/#{page}", ready, height)
        browser.click(CLOSE_ASSISTANT)
        browser.wait_settled()
        if before:
            before()
        path = out / name
        browser.screenshot(path)
        log.info("%s: %s (%d KB)", path, page, path.stat().st_size // 1024)
        written.append(path)

    dataset_name = champion_run.inputs.dataset_inputs[0].dataset.name
    shoot("mlflow_runs.png", f"/experiments/{experiment_id}/runs",
          text_shown(runs[0].info.run_name, runs[1].info.run_name, dataset_name), 400)
    # The run's metrics filtered to the validation ones: each row names the logged model that carries it.
    shoot("mlflow_run_model.png", f"/experiments/{experiment_id}/runs/{champion_run.info.run_id}",
          text_shown("Registered models", dataset_name, "val/weighted_loss"), 860,
          before=lambda: browser.type_into("Search metrics", "val/", text_shown("Model metrics (8)")))
    shoot("mlflow_compare.png", f"/experiments/{experiment_id}/runs?compareRunsMode=CHART",
          text_shown(runs[0].info.run_name, runs[1].info.run_name, "train/loss", "val/loss"), 1100)
    shoot("mlflow_registry.png", f"/models/{SKELETON_MODEL}",
          text_shown("Version 2", "Version 1", "champion", "challenger"), 1180)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="", help="store of the server and the pipeline's work folder "
                        "(kept; reused runs skip training); default: a temporary folder, removed")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder for the PNGs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="Chromium binary")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from signpose.tracking.server import MlflowServer

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="signpose-screenshots-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with MlflowServer.start(f"sqlite:///{workdir / 'mlflow.db'}", (workdir / "artifacts").as_uri(), workdir,
                            timeout_s=300) as server:
        produce_runs(workdir, server.url)  # what the store does not hold yet
        browser = Chromium(args.chromium)
        try:
            written = take_screenshots(browser, server.url, Path(args.out))
        finally:
            browser.close()
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main()
