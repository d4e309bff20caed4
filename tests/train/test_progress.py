"""The progress bar (tunesmith.train.progress) shows a loss even when no step was logged."""

from __future__ import annotations


def test_progress_shows_a_loss_when_no_step_was_logged():
    from rich.console import Console

    from tunesmith.train.progress import RichProgress

    bar = RichProgress(Console(quiet=True), enabled=False)
    bar.on_log(None, None, None, logs={"train_loss": 2.5, "train_runtime": 1.0})
    assert bar.loss == "2.5000"
    logged = RichProgress(Console(quiet=True), enabled=False)
    logged.on_log(None, None, None, logs={"loss": 3.0})
    logged.on_log(None, None, None, logs={"train_loss": 9.0})  # the last logged step's loss stays
    assert logged.loss == "3.0000"
