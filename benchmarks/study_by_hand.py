"""One run of a study the way a student writes it by hand: one configuration, one seed, one process.

Used by ``study_speed.py`` (way (a)), which starts this script once per configuration and seed and
collects the JSON line each run prints into a table. The script is what a course notebook does: the
split arrays are read from disk (``.npy`` files, as ``torchvision.datasets.CIFAR10`` reads its
pickled arrays), a ``Dataset`` returns one item at a time (images as PIL images through torchvision
transforms, 1-D signals as tensors), a ``DataLoader`` batches them, and a plain loop trains, then
evaluates the validation split after every epoch, keeping the best weights in memory.

Evaluation mirrors what ``reglab study`` does with ``eval_train = false``: validation after every
epoch; at the end validation and test of the last weights, then of the best-validation weights.

Run: ``python benchmarks/study_by_hand.py --data DIR --config '{"hidden": [256, 256], ...}' --seed 0``
(``DIR`` holds ``train_x.npy`` ... ``test_y.npy`` and ``meta.json``, written by
:func:`write_arrays`). The last stdout line is the run's JSON result.
"""
from __future__ import annotations

import time

STARTED = time.time()  # before the imports: the process's start-up is part of the by-hand cost

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from by_hand_data import PILImages

SPLITS = ("train", "val", "test")


# ---- data ------------------------------------------------------------------------------------------
def write_arrays(data, folder: Path) -> Path:
    """Save the splits of a reglab ``Data`` as the by-hand scripts read them: images as NHWC uint8 arrays
    (as torchvision's CIFAR10 holds them), signals as float32; plus ``meta.json`` (kind, mean, std)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        split = getattr(data, name)
        x = split.x.cpu()
        x = x.permute(0, 2, 3, 1).contiguous() if data.kind == "image" else x.float()
        np.save(folder / f"{name}_x.npy", x.numpy())
        np.save(folder / f"{name}_y.npy", split.y.cpu().numpy())
    meta = {"kind": data.kind, "classes": len(data.classes), "input_shape": list(data.input_shape),
            "mean": data.mean.tolist() if data.mean is not None else None,
            "std": data.std.tolist() if data.std is not None else None}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


class Signals(torch.utils.data.Dataset):
    """1-D signals held as a float32 array, one (tensor, label) per item."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[i]), int(self.y[i])


def datasets(folder: Path) -> tuple[dict, dict[str, torch.utils.data.Dataset]]:
    """The meta data and one Dataset per split (no augmentation: the study's configurations have none)."""
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {name: (np.load(folder / f"{name}_x.npy"), np.load(folder / f"{name}_y.npy")) for name in SPLITS}
    if meta["kind"] == "image":
        from torchvision import transforms as T

        transform = T.Compose([T.ToTensor(), T.Normalize(meta["mean"], meta["std"])])
        return meta, {name: PILImages(x, y, transform) for name, (x, y) in arrays.items()}
    return meta, {name: Signals(x, y) for name, (x, y) in arrays.items()}


# ---- model and optimizer -----------------------------------------------------------------------------
def mlp(input_shape: list[int], classes: int, hidden: list[int], batchnorm: bool) -> nn.Sequential:
    """Flatten -> [Linear -> (BatchNorm) -> ReLU] * L -> Linear (the Linear before a BatchNorm has no bias)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(np.prod(input_shape))
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def optimizer(params, spec: dict) -> torch.optim.Optimizer:
    """``{"name": "sgd"|"adam"|"adamw", "lr": ..., ...}`` -> the torch optimizer (torch's default implementation)."""
    knobs = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "sgd":
        return torch.optim.SGD(params, **knobs)
    if spec["name"] in ("adam", "adamw"):
        betas = (knobs.pop("beta1", 0.9), knobs.pop("beta2", 0.999))
        return (torch.optim.Adam if spec["name"] == "adam" else torch.optim.AdamW)(params, betas=betas, **knobs)
    raise ValueError(f"unknown optimizer {spec['name']}")


# ---- training and evaluation -----------------------------------------------------------------------
def evaluate(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int) -> dict[str, float]:
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
            out = model(x)
            loss_sum += nn.functional.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    return {"loss": loss_sum / n, "accuracy": correct / n}


def train(config: dict, seed: int, meta: dict, data: dict[str, torch.utils.data.Dataset]) -> dict:
    """Train one seed of ``config``; return its history (one record per epoch), final metrics and timings.

    ``config``: hidden, batchnorm, optimizer (a dict), epochs, batch_size, eval_batch_size, and
    ``batches`` (training batches per epoch; None: the whole training split)."""
    torch.manual_seed(seed)
    model = mlp(meta["input_shape"], meta["classes"], config["hidden"], config["batchnorm"])
    opt = optimizer(model.parameters(), config["optimizer"])
    loss_fn = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(data["train"], batch_size=config["batch_size"], shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    history, best_acc, best_state = [], -1.0, None
    seconds = {"train": 0.0, "evaluate": 0.0}
    for epoch in range(1, config["epochs"] + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum, correct, n, steps = 0.0, 0, 0, 0
        for x, y in loader:
            if steps == config.get("batches"):
                break
            steps += 1
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
        t1 = time.perf_counter()
        val = evaluate(model, data["val"], config["eval_batch_size"])
        if val["accuracy"] > best_acc:
            best_acc, best_state = val["accuracy"], copy.deepcopy(model.state_dict())
        history.append({"epoch": epoch, "batches": steps,
                        "train_loss": loss_sum / n, "train_accuracy": correct / n,
                        "val_loss": val["loss"], "val_accuracy": val["accuracy"]})
        seconds["train"] += t1 - t0
        seconds["evaluate"] += time.perf_counter() - t1
    t0 = time.perf_counter()
    final = {f"last_{name}_{k}": v for name in ("val", "test")
             for k, v in evaluate(model, data[name], config["eval_batch_size"]).items()}
    model.load_state_dict(best_state)
    final |= {f"{name}_{k}": v for name in ("val", "test") for k, v in evaluate(model, data[name], config["eval_batch_size"]).items()}
    seconds["evaluate"] += time.perf_counter() - t0
    return {"seed": seed, "history": history, "final": final, "seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="one by-hand run (one configuration, one seed)")
    p.add_argument("--data", type=Path, required=True, help="folder of the split arrays (write_arrays)")
    p.add_argument("--config", required=True, help="the configuration as JSON")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    imported = time.time()
    meta, data = datasets(args.data)
    loaded = time.time()
    result = train(json.loads(args.config), args.seed, meta, data)
    result["seconds"] |= {"start-up": imported - STARTED, "data": loaded - imported, "threads": torch.get_num_threads()}
    result["started"] = STARTED
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
