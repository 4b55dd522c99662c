"""End to end: the demo as a subprocess, and a real TensorBoard server reading our runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import read_scalars


def test_demo_runs_end_to_end_and_prints_the_tensorboard_command(tmp_path):
    """`python -m torchwatch demo` trains, writes train/ and val/, and ends with the command."""
    logdir = tmp_path / "demo"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "torchwatch", "demo", "--logdir", str(logdir), "--epochs", "3"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "CI": "true"},
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Epoch [1/3] train  loss ")
    assert any(line.startswith("Epoch [3/3] val  loss ") and " acc " in line for line in lines)
    assert lines[-1].strip() == f"tensorboard --logdir {logdir}"
    train, val = read_scalars(logdir / "train"), read_scalars(logdir / "val")
    assert [s for s, _ in train["epoch/loss"]] == [0, 1, 2]
    assert [s for s, _ in val["epoch/acc"]] == [0, 1, 2]
    assert "step/loss" in train and "epoch/lr" in train


def test_demo_default_logdir_is_under_runs(tmp_path):
    """Without --logdir the demo writes runs/demo-<time> in the current folder."""
    result = subprocess.run(
        [sys.executable, "-m", "torchwatch", "demo", "--epochs", "1"], cwd=tmp_path,
        capture_output=True, text=True, timeout=120, env={**os.environ, "CI": "true"},
    )
    assert result.returncode == 0, result.stderr
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("demo-")
    assert result.stdout.strip().endswith(f"tensorboard --logdir {os.path.join('runs', made.name)}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_tensorboard_server_finds_train_and_val_runs(tmp_path):
    """A real `tensorboard` on 127.0.0.1 lists runs train and val with the tag epoch/loss."""
    import torchwatch as tw

    tw.init(logdir=str(tmp_path), console=False)
    for epoch in range(2):
        with tw.phase("train"):
            tw.log(loss=1.0 / (epoch + 1))
        with tw.phase("val"):
            tw.log(loss=2.0 / (epoch + 1))
    tw.close()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host",
         "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        tags = {}
        while time.monotonic() < deadline:
            try:
                tags = _get(f"{base}/data/plugin/scalars/tags")
                if {"train", "val"} <= set(tags):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert {"train", "val"} <= set(tags)
        assert "epoch/loss" in tags["train"] and "epoch/loss" in tags["val"]
        points = _get(f"{base}/data/plugin/scalars/scalars?run=val&tag=epoch/loss")
        assert [(p[1], p[2]) for p in points] == [(0, 2.0), (1, 1.0)]
    finally:
        server.terminate()
        server.wait(timeout=30)
