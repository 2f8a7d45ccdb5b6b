"""The same `shrink train` under two processes (torchrun, gloo on CPU) matches one process at the same global batch."""
import json
import os
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file

ARGS = ["train", "--model", "vit-micro", "--dataset", "synthetic-image:1x16x16", "--max-train-samples", "128",
        "--max-eval-samples", "64", "--epochs", "1", "--lr", "0.003", "--seed", "5", "--no-progress"]


def run(cmd, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "shrink", *ARGS, "--batch-size", "16", "--out", "ddp"], tmp_path)
    run([sys.executable, "-m", "shrink", *ARGS, "--batch-size", "32", "--out", "single"], tmp_path)
    ddp, single = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp", "single"))
    assert ddp["steps"] == single["steps"] == 4
    assert abs(ddp["history"][0]["train_loss"] - single["history"][0]["train_loss"]) < 1e-3
    weights = [load_file(tmp_path / d / "model" / "model.safetensors") for d in ("ddp", "single")]
    for name, tensor in weights[1].items():
        assert torch.allclose(weights[0][name], tensor, atol=1e-4), name
