"""Success while training (`mvp train --eval-every N --eval-episodes K`).

Every N steps, and at the last step, the EMA weights are saved as a snapshot checkpoint in
`eval/step_<step>/` and `mvp eval` rolls it out in the dataset's simulated task (its `env_args`) in a
separate process, so rendering and simulation never stall the training loop. One evaluation runs at
a time; snapshots due meanwhile wait their turn. The loop collects results as they arrive without
waiting: each adds a row to train_log.csv with `eval_step` (the step evaluated) and
`eval_success_rate`, and the evaluation's JSON stays as `eval/step_<step>.json`. The snapshot with
the highest success rate so far (the later one on a tie) is kept in `best/`, whose config.json
records the step in `training.step` and the evaluation in `training.eval`. Every evaluation of a run
uses the same episode seeds (eval_seed + i), so evaluations are comparable across steps. At the end
the loop waits for the evaluations still running or queued. Only rank 0 evaluates.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Callable

import torch

from ..policy.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from ..policy.config import ConfigError
from .workspace import LOG_FILE, PLOT_FILE, Workspace, plot_losses

EVAL_COLUMNS = ["eval_step", "eval_success_rate"]
EVAL_DIR = "eval"
BEST_DIR = "best"
LOG_TAIL_LINES = 20

Log = Callable[[int, dict], None]


class SuccessEvaluator:
    """Rank 0's evaluations of one run; on other ranks, and without `eval_every`, it does nothing."""

    def __init__(self, workspace: Workspace, resume: bool):
        config = workspace.config
        self.workspace = workspace
        self.enabled = config.eval_every > 0 and workspace.ranks.is_main
        if config.eval_every and not workspace.train_set.env_args:
            raise ConfigError(f"eval_every: {config.dataset} has no env_args (data.attrs['env_args']), so there is no "
                              "simulated task to evaluate in; train without --eval-every, or on data from mvp demos")
        self.queue: deque[int] = deque()
        self.running: tuple[int, subprocess.Popen] | None = None
        self.best_success = -1.0
        best = workspace.out / BEST_DIR
        if resume and (best / "config.json").is_file():
            self.best_success = read_checkpoint_info(best).training["eval"]["success_rate"]

    def due(self, step: int, last: bool) -> bool:
        return self.enabled and (step % self.workspace.config.eval_every == 0 or last)

    def submit(self, step: int, ema: torch.nn.Module, training: dict) -> None:
        """Saves the EMA weights as step's snapshot and queues its evaluation."""
        workspace = self.workspace
        save_checkpoint(self._snapshot(step), ema, workspace.normalization, env_args=workspace.train_set.env_args,
                        contract=workspace.contract, training=training)
        self.queue.append(step)
        self._start_next()

    def collect(self, log: Log, step: int) -> None:
        """Logs (at `step`) the result of the evaluation that has finished, if one has; never waits."""
        if self.running is not None and self.running[1].poll() is not None:
            self._finished(log, step)
            self._start_next()

    def finish(self, log: Log, step: int) -> None:
        """Waits for every evaluation still running or queued, logs them at `step` and plots the log again."""
        while self.running is not None:
            self.running[1].wait()
            self._finished(log, step)
            self._start_next()
        if self.enabled:
            plot_losses(self.workspace.out / LOG_FILE, self.workspace.out / PLOT_FILE)

    def close(self) -> None:
        """Stops an evaluation still running (the training loop ended early)."""
        if self.running is not None:
            self.running[1].kill()
            self.running[1].wait()
            self.running = None

    def _snapshot(self, step: int) -> Path:
        return self.workspace.out / EVAL_DIR / f"step_{step:08d}"

    def _start_next(self) -> None:
        if self.running is not None or not self.queue:
            return
        config, step = self.workspace.config, self.queue.popleft()
        snapshot = self._snapshot(step)
        command = [sys.executable, "-m", "mvp_ros.cli", "eval", "--checkpoint", str(snapshot),
                   "--episodes", str(config.eval_episodes), "--seed", str(config.eval_seed),
                   "--json", str(snapshot / "eval.json"), "--device", "cpu", "--no-progress"]
        if config.eval_max_steps:
            command += ["--max-steps", str(config.eval_max_steps)]
        with (snapshot / "eval.log").open("w") as output:
            self.running = (step, subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT))

    def _finished(self, log: Log, step: int) -> None:
        evaluated, process = self.running
        self.running = None
        snapshot = self._snapshot(evaluated)
        if process.returncode != 0:
            tail = (snapshot / "eval.log").read_text().splitlines()[-LOG_TAIL_LINES:]
            print(f"mvp train: warning: the evaluation of step {evaluated} failed (mvp eval exited with "
                  f"{process.returncode}); its output, {snapshot / 'eval.log'}, ends:\n" + "\n".join(tail), file=sys.stderr)
            return
        result = json.loads((snapshot / "eval.json").read_text())
        log(step, {"eval_step": evaluated, "eval_success_rate": result["success_rate"]})
        if result["success_rate"] >= self.best_success:
            self.best_success = result["success_rate"]
            model, info = load_checkpoint(snapshot)
            evaluation = {key: result[key] for key in ("episodes", "successes", "success_rate", "success_rate_ci95",
                                                       "seeds", "settings")}
            save_checkpoint(self.workspace.out / BEST_DIR, model, info.normalization, env_args=info.env_args,
                            contract=info.contract, training={**info.training, "eval": {"step": evaluated, **evaluation}})
        (snapshot / "eval.json").replace(snapshot.parent / f"{snapshot.name}.json")
        shutil.rmtree(snapshot)
