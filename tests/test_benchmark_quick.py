"""The speed benchmark (benchmarks/speed.py): its by-hand path feeds the model the same inputs as reglab's
device path, its clock counts CPU work, and its --quick run ends with a parseable, consistent summary."""
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reglab.data import Data, Split
from reglab.techniques.crop import random_crop
from reglab.techniques.flip import flip

from conftest import offline

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def load_speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cifar_like(n=6, seed=0) -> Data:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(10, (n,), generator=g)
    split = Split(x, y)
    return Data(name="fake", task="classification", train=split, val=split, test=split, input_shape=(3, 32, 32),
                classes=[str(i) for i in range(10)], mean=torch.tensor([0.49, 0.48, 0.45]),
                std=torch.tensor([0.25, 0.24, 0.26]), kind="image")


def test_by_hand_item_is_one_of_reglabs_crops_and_flips():
    """torchvision's RandomCrop(32, padding=4)+flip+ToTensor+Normalize on a PIL image gives exactly one of
    the 81 x 2 inputs that reglab's batched crop (padding 4) + flip + normalize can give: the two paths
    of the benchmark do the same work."""
    speed = load_speed()
    data = cifar_like()
    dataset = speed.pil_dataset(data)
    torch.manual_seed(3)
    for i in range(len(data.train)):
        x, label = dataset[i]
        assert x.shape == (3, 32, 32) and label == int(data.train.y[i])
        image = data.to_input(data.train.x[i : i + 1]).expand(81, -1, -1, -1)
        offsets = torch.cartesian_prod(torch.arange(9), torch.arange(9))
        crops = random_crop(image, offsets, 4)
        candidates = data.normalize(torch.cat([crops, flip(crops, torch.ones(81, dtype=torch.bool))]))
        err = (candidates - x).abs().flatten(1).max(1).values
        assert err.min() < 1e-5, f"item {i}: no crop/flip of reglab matches (closest {err.min():.3g})"
        assert (err < 1e-5).sum() <= 2  # a random image has one match (two only if symmetric)


BUSY_CHILD = """
import time
while time.process_time() < 0.2:
    pass
print(time.process_time(), flush=True)
time.sleep(30)
"""


def test_cpu_clock_counts_children_and_not_sleep():
    """The CPU clock adds live child processes (DataLoader workers) to this process, and not idle time."""
    speed = load_speed()
    clock = speed.Clock(torch.device("cpu"))
    clock.start()
    time.sleep(0.3)
    wall, cpu = clock.stop()
    assert wall >= 0.3 and cpu < 0.1
    clock.start()
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        child_cpu = float(child.stdout.readline())  # the child is busy for 0.2 CPU seconds, then sleeps
        wall, cpu = clock.stop()
    finally:
        child.kill()
        child.wait()
    assert child_cpu >= 0.2
    assert cpu >= child_cpu - 0.02, (cpu, child_cpu)  # /proc counts in ticks of 10 ms


def test_parse_summary():
    speed = load_speed()
    parsed = speed.parse_summary("summary: c/a=2.31 d/c=7.90 a_sps=840 d_path=grouped device=cpu")
    assert parsed == {"c/a": 2.31, "d/c": 7.9, "a_sps": 840.0, "d_path": "grouped", "device": "cpu"}
    with pytest.raises(ValueError):
        speed.parse_summary("total 40 s")


@pytest.mark.slow
def test_quick_run_ends_with_a_consistent_summary():
    root = offline("cifar10", "cifar10-jpeg.zip").parents[1]
    env = {**os.environ, "REGLAB_DATA": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--steps", "2", "--warmup", "1", "--rounds", "1",
           "--no-lightning"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = load_speed().parse_summary(done.stdout.strip().splitlines()[-1])
    for key in ("c/a", "d/c", "cifar_auto/seq", "cifar_group/seq", "mnist1d_group/seq", "a_sps", "c_sps"):
        assert summary[key] > 0, key
    assert summary["d_path"] in ("grouped", "sequential") and summary["device"] == "cpu"
    if summary["d_path"] == "sequential":  # 8 seeds one by one cost 8 single runs, the auto choice is that path
        assert summary["d/c"] == 8.0 and summary["cifar_auto/seq"] == 1.0
    else:
        assert summary["cifar_auto/seq"] == summary["cifar_group/seq"]
    assert summary["c_sps"] == pytest.approx(summary["a_sps"] * summary["c/a"], rel=0.02)
