"""Training speed, side by side: reglab against the by-hand loop and PyTorch Lightning.

Model: the CIFAR-10 MLP 3072-1024-512-256-10 (ReLU), SGD (lr 0.01, momentum 0.9), batch 128, random
crop (padding 4) + horizontal flip, on reglab's offline CIFAR-10 copy (``REGLAB_DATA``; the 45,000-image
train split). Paths, measured in the same process, interleaved round by round:

(a) by hand, the way the course notebooks do it: a ``Dataset`` returning PIL images (as
    ``torchvision.datasets.CIFAR10`` does) + torchvision transforms (RandomCrop(32, padding=4),
    RandomHorizontalFlip, ToTensor, Normalize) + ``DataLoader(shuffle=True)``, with num_workers 0 and
    num_workers = os.cpu_count();
(b) the same model as a ``LightningModule`` fed by the same Dataset/DataLoader (the faster of the two
    worker settings of (a));
(c) reglab, one seed: ``reglab.engine.run.build_run`` + ``reglab.engine.loop.train_epoch`` (data on the device as uint8
    tensors, batched crop+flip on the device);
(d) reglab, 8 seeds: the path ``reglab.engine.grouping.decide`` picks by itself (the one ``fit_seeds(grouping="auto")``
    takes): the 8 seeds stacked in one ``Stacked`` model, or one after another (= 8 runs like (c), so 8 x its time).
    The stacked path is timed either way, so the report shows the choice and what the other path costs.

Plus the many-seeds case on MNIST-1D with the MLP 40-256-256-10 (SGD, batch 128, no augmentation): 8 seeds
stacked against 8 seeds one after another, as training steps and as whole ``fit_seeds`` runs.

Every path is timed over a fixed number of optimizer steps after warm-up steps (a fresh model and
loader per round); paths are interleaved round by round and the figure is the median over rounds.
All paths use the same ``torch.set_num_threads`` (default ``os.cpu_count()``; ``--threads``). Two
clocks: wall-clock seconds, and CPU seconds of the process plus its live children (DataLoader
workers), which do not depend on what else runs on a shared machine. ``--precision`` sets every path
alike: ``bf16`` runs all of them under bf16 autocast (reglab through ``RunConfig.amp="bf16"``; by hand
and Lightning with ``torch.autocast``/``precision="bf16-mixed"``), ``fp32`` none, ``auto`` (default)
bf16 on CUDA and fp32 on the CPU. On CUDA the by-hand loaders pin memory and the clocks are read after
``torch.cuda.synchronize()``.

The last line is a parseable summary::

    summary: c/a=2.31 ... d/c=8.00 cifar_auto/seq=1.00 ... mnist1d_group/seq=0.68 ... d_path=sequential ...

Run: ``REGLAB_DATA=/work/shared/datasets python benchmarks/speed.py [--quick] [--device auto|cpu|cuda]``
(see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
from torch import nn

from reglab.config import RunConfig
from reglab.data import Data, load
from reglab.engine.grouping import decide, fit_seeds
from reglab.engine.loop import train_epoch
from reglab.engine.run import Run, build_run, select_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from by_hand_data import PILImages  # noqa: E402  (shared with study_by_hand.py)

HIDDEN = [1024, 512, 256]
BATCH = 128
LR, MOMENTUM = 0.01, 0.9
SEEDS = list(range(8))


# ---- settings --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds (under 2 minutes on a 2-core CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 30, quick 10)")
    p.add_argument("--rounds", type=int, default=None, help="rounds; figures are medians (default 3, quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per round (default 6, quick 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for every path (default os.cpu_count())")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="every path alike: bf16 autocast or float32 (auto: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--no-lightning", action="store_true", help="skip (b)")
    args = p.parse_args(argv)
    args.steps = args.steps or (10 if args.quick else 30)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup or (3 if args.quick else 6)
    args.threads = args.threads or os.cpu_count() or 1
    for name in ("steps", "rounds", "warmup", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its live child processes (DataLoader
    workers; read from /proc on Linux). A load-independent measure of what a path costs."""
    total = time.process_time()
    if not os.path.isdir("/proc"):
        return total
    me, tick = str(os.getpid()), os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid; utime and stime are fields 14 and 15 of stat
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Clock:
    """Wall-clock and CPU seconds between :meth:`start` and :meth:`stop` (device synchronized at both)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        sync(self.device)
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def stop(self) -> tuple[float, float]:
        sync(self.device)
        return time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def bf16_on(precision: str, device: torch.device) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def cifar_config(device: torch.device, bf16: bool, seed: int = 0) -> RunConfig:
    return RunConfig(
        dataset="cifar10", model="mlp", model_options={"hidden": HIDDEN}, batch_size=BATCH, seed=seed,
        device=str(device), amp="bf16" if bf16 else "off",
        techniques=[{"name": "sgd", "lr": LR, "momentum": MOMENTUM}, {"name": "crop", "padding": 4}, {"name": "flip"}],
    )


def mnist1d_config(device: torch.device, bf16: bool) -> RunConfig:
    return RunConfig(dataset="mnist1d", model="mlp", model_options={"hidden": [256, 256]}, batch_size=BATCH,
                     device=str(device), amp="bf16" if bf16 else "off", techniques=[{"name": "sgd", "lr": LR, "momentum": MOMENTUM}])


# ---- (a) and (b): the by-hand data path ----------------------------------------------------------------
def pil_dataset(data: Data) -> PILImages:
    from torchvision import transforms as T

    transform = T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
        T.Normalize(data.mean.tolist(), data.std.tolist()),
    ])
    images = data.train.x.cpu().permute(0, 2, 3, 1).contiguous().numpy()
    return PILImages(images, data.train.y.cpu().numpy(), transform)


def by_hand_mlp() -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 3 * 32 * 32
    for h in HIDDEN:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def loader(dataset: PILImages, workers: int, device: torch.device, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
    )


def time_by_hand(dataset: PILImages, workers: int, device: torch.device, bf16: bool, warmup: int, steps: int,
                 seed: int) -> tuple[float, float]:
    """(wall, CPU) seconds for ``steps`` steps of the plain loop (after ``warmup`` steps)."""
    torch.manual_seed(seed)
    model = by_hand_mlp().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    batches = iter(loader(dataset, workers, device, seed))
    model.train()

    def step() -> None:
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    clock = Clock(device)
    clock.start()
    for _ in range(steps):
        step()
    seconds = clock.stop()
    del batches  # stops the workers
    return seconds


def time_lightning(dataset: PILImages, workers: int, device: torch.device, bf16: bool, warmup: int, steps: int,
                   seed: int) -> tuple[float, float]:
    """(wall, CPU) seconds between the end of batch ``warmup`` and the end of batch ``warmup + steps`` in ``Trainer.fit``."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = by_hand_mlp()
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return self.loss_fn(self(x).float(), y)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=LR, momentum=MOMENTUM)

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.clock = Clock(device)
            self.seconds = (float("nan"), float("nan"))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if batch_idx == warmup - 1:
                self.clock.start()
            elif batch_idx == warmup + steps - 1:
                self.seconds = self.clock.stop()

    torch.manual_seed(seed)
    clock = Timer()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=warmup + steps, max_epochs=1,
        precision="bf16-mixed" if bf16 else "32-true", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[clock],
    )
    trainer.fit(Module(), train_dataloaders=loader(dataset, workers, device, seed))
    return clock.seconds


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def lightning_version() -> str | None:
    try:
        import lightning
    except ImportError:
        return None
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return lightning.__version__


# ---- (c) and (d): reglab ----------------------------------------------------------------------------------
def time_reglab(config: RunConfig, seeds: list[int], data: Data, warmup: int, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds for ``steps`` steps of ``reglab.engine.loop.train_epoch`` on ``seeds`` stacked in one run."""
    run = build_run(config, seeds, data)
    train_steps(run, warmup)
    clock = Clock(run.device)
    clock.start()
    train_steps(run, steps)
    return clock.stop()


def train_steps(run: Run, steps: int) -> None:
    """``steps`` optimizer steps of ``train_epoch`` (batches drawn pass after pass, as in training)."""
    train_epoch(run, batches=steps)


def time_sequential(config: RunConfig, seeds: list[int], data: Data, warmup: int, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds for ``steps`` steps of every seed, one run after another."""
    each = [time_reglab(config, [s], data, warmup, steps) for s in seeds]
    return sum(w for w, _ in each), sum(c for _, c in each)


FIT_EPOCHS = 3


def time_fit_seeds(config: RunConfig, data: Data, grouping: str) -> tuple[float, float]:
    """(wall, CPU) seconds for a whole ``fit_seeds`` of the 8 seeds (training, per-epoch validation, final evaluation)."""
    config = config.model_copy(update={"epochs": FIT_EPOCHS})
    clock = Clock(select_device(config.device))
    clock.start()
    fit_seeds(config, SEEDS, data=data, grouping=grouping)
    return clock.stop()


def parse_summary(line: str) -> dict[str, float | str]:
    """The ``summary:`` line as a dict: numbers as floats, words (``d_path=grouped``) as strings."""
    if not line.startswith("summary: "):
        raise ValueError(f"not a summary line: {line[:60]!r}")
    out: dict[str, float | str] = {}
    for item in line[len("summary: "):].split():
        key, _, value = item.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


# ---- the benchmark ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    threads = args.threads
    torch.set_num_threads(threads)
    workers = os.cpu_count() or 1
    device = select_device(args.device)
    lightning = None if args.no_lightning else lightning_version()
    started = time.perf_counter()
    print(f"speed benchmark {date.today()}  device={device}  cpu={cpu_name()}  cores={workers}  threads={threads}  "
          f"torch {torch.__version__}  lightning {lightning or 'not installed'}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(f"steps={args.steps} warmup={args.warmup} rounds={args.rounds} batch={BATCH} (figures: medians over rounds)")
    if lightning is None and not args.no_lightning:
        print("lightning: not installed")

    data = load("cifar10").to(device)
    dataset = pil_dataset(data)
    mnist = load("mnist1d").to(device)
    bf16 = bf16_on(args.precision, device)
    precision = "bf16" if bf16 else "fp32"
    print(f"precision: {precision} on every path")
    cifar = cifar_config(device, bf16)
    m1d = mnist1d_config(device, bf16)
    w, n = args.warmup, args.steps
    m1d_steps = 4 * n  # MNIST-1D steps take milliseconds: more of them for a steadier clock
    t_dec = time.perf_counter()
    choice = decide(cifar, SEEDS, data)
    decide_seconds = time.perf_counter() - t_dec
    print(f"reglab automatic choice for 8 CIFAR-10 MLP seeds: {'grouped' if choice.grouped else 'sequential'} "
          f"({choice.reason}; decided in {decide_seconds:.1f} s)")
    choice_m1d = decide(m1d, SEEDS, mnist)
    print(f"reglab automatic choice for 8 MNIST-1D MLP seeds: {'grouped' if choice_m1d.grouped else 'sequential'} "
          f"({choice_m1d.reason})", flush=True)

    paths: dict[str, Callable[[int], tuple[float, float]]] = {
        "a0": lambda r: time_by_hand(dataset, 0, device, bf16, w, n, r),
        "aN": lambda r: time_by_hand(dataset, workers, device, bf16, w, n, r),
        "c": lambda r: time_reglab(cifar, [r], data, w, n),
        "cifar_group8": lambda r: time_reglab(cifar, SEEDS, data, w, n),
        "m1d_group8": lambda r: time_reglab(m1d, SEEDS, mnist, w, m1d_steps),
        "m1d_seq8": lambda r: time_sequential(m1d, SEEDS, mnist, w, m1d_steps),
        "m1d_fit_group8": lambda r: time_fit_seeds(m1d, mnist, "group"),
        "m1d_fit_seq8": lambda r: time_fit_seeds(m1d, mnist, "single"),
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in [*paths, "b"]}
    for r in range(args.rounds):  # paths interleaved round by round, so that they share the machine's load
        for name, fn in paths.items():
            times[name].append(fn(r))
        if lightning is not None:
            b_workers = 0 if times["a0"][-1][0] <= times["aN"][-1][0] else workers
            times["b"].append(time_lightning(dataset, b_workers, device, bf16, w, n, r))
        print(f"round {r + 1}/{args.rounds} (wall/CPU s): "
              + " ".join(f"{k}={v[-1][0]:.2f}/{v[-1][1]:.2f}" for k, v in times.items() if v), flush=True)

    # medians of wall-clock (W) and CPU (C) seconds
    W = {k: statistics.median(t[0] for t in v) for k, v in times.items() if v}
    C = {k: statistics.median(t[1] for t in v) for k, v in times.items() if v}
    for T in (W, C):  # one seed after another = 8 runs like (c) (fit_seeds runs one fit per seed)
        T["cifar_seq8"] = 8 * T["c"]
    a_key = "a0" if W["a0"] <= W["aN"] else "aN"
    d_key = "cifar_group8" if choice.grouped else "cifar_seq8"
    for T in (W, C):
        T["a"], T["d"] = T[a_key], T[d_key]
    d_path = "grouped" if choice.grouped else "sequential"
    samples = {k: BATCH * n for k in ("a0", "aN", "a", "b", "c")} | {"d": 8 * BATCH * n}

    print()
    print(f"CIFAR-10 MLP 3072-1024-512-256-10, batch {BATCH}, crop(4)+flip, SGD, {precision}; {n} timed steps after "
          f"{w} warm-up, median of {args.rounds} round(s)")
    print(f"{'path':62s} {'samples/s':>10s} {'x (a)':>6s} {'samples/CPU-s':>14s} {'x (a)':>6s}")
    rows = [
        ("a0", "(a) by hand, PIL+torchvision+DataLoader, num_workers=0"),
        ("aN", f"(a) by hand, PIL+torchvision+DataLoader, num_workers={workers}"),
        ("b", f"(b) Lightning {lightning}, same DataLoader (num_workers={0 if a_key == 'a0' else workers})"),
        ("c", "(c) reglab, 1 seed"),
        ("d", f"(d) reglab, 8 seeds, automatic choice: {d_path}"),
    ]
    for key, label in rows:
        if key in W:
            wall, cpu = samples[key] / W[key], samples[key] / C[key]
            print(f"{label:62s} {wall:10.0f} {wall / (samples['a'] / W['a']):6.2f} {cpu:14.0f} "
                  f"{cpu / (samples['a'] / C['a']):6.2f}")
    print(f"(a) = the faster worker setting ({a_key}); (d) counts the samples of all 8 seeds; CPU seconds include "
          "DataLoader workers")
    print(f"8 CIFAR-10 MLP seeds, {n} steps: grouped {W['cifar_group8']:.2f} s, sequential (8 x c) "
          f"{W['cifar_seq8']:.2f} s, grouped/sequential {W['cifar_group8'] / W['cifar_seq8']:.2f} "
          f"(CPU {C['cifar_group8'] / C['cifar_seq8']:.2f}); automatic choice ({d_path})/sequential "
          f"{W['d'] / W['cifar_seq8']:.2f}")
    one_epoch = W["cifar_seq8"] / n * (len(data.train) // BATCH)
    print(f"  the decision itself took {decide_seconds:.1f} s = {decide_seconds / one_epoch:.1%} of one epoch of 8 "
          "sequential seeds")
    print(f"8 MNIST-1D seeds, MLP 40-256-256-10, {m1d_steps} steps: grouped {W['m1d_group8']:.3f} s, sequential "
          f"{W['m1d_seq8']:.3f} s, grouped/sequential {W['m1d_group8'] / W['m1d_seq8']:.2f} "
          f"(CPU {C['m1d_group8'] / C['m1d_seq8']:.2f})")
    print(f"8 MNIST-1D seeds, whole fit_seeds ({FIT_EPOCHS} epochs + evaluation): grouping=group {W['m1d_fit_group8']:.2f} s, "
          f"grouping=single {W['m1d_fit_seq8']:.2f} s, ratio {W['m1d_fit_group8'] / W['m1d_fit_seq8']:.2f} "
          f"(CPU {C['m1d_fit_group8'] / C['m1d_fit_seq8']:.2f})")
    nan = float("nan")
    summary = {
        "c/a": W["a"] / W["c"],
        "c/a0": W["a0"] / W["c"],
        "c/aN": W["aN"] / W["c"],
        "c/b": W["b"] / W["c"] if "b" in W else nan,
        "d/c": W["d"] / W["c"],
        "cifar_auto/seq": W["d"] / W["cifar_seq8"],
        "cifar_group/seq": W["cifar_group8"] / W["cifar_seq8"],
        "mnist1d_group/seq": W["m1d_group8"] / W["m1d_seq8"],
        "mnist1d_fit_group/seq": W["m1d_fit_group8"] / W["m1d_fit_seq8"],
        "cpu_c/a": C["a"] / C["c"],
        "cpu_c/b": C["b"] / C["c"] if "b" in C else nan,
        "a_sps": samples["a"] / W["a"], "b_sps": samples["b"] / W["b"] if "b" in W else nan,
        "c_sps": samples["c"] / W["c"],
    }
    print(f"total {time.perf_counter() - started:.0f} s")
    print("summary: " + " ".join(f"{k}={v:.0f}" if k.endswith("_sps") else f"{k}={v:.2f}" for k, v in summary.items())
          + f" d_path={d_path} mnist1d_auto={'grouped' if choice_m1d.grouped else 'sequential'} "
          f"threads={threads} device={device.type} precision={precision}")
    return summary


if __name__ == "__main__":
    main()
