"""Training quality targets on synthetic data, printed as a table (a benchmark, not a test).

1. SSDLite (MobileNetV3-large backbone) from scratch on ``shelf`` scenes: mAP@.5 on held-out
   scenes (target >= 0.9 within 10 CPU minutes on a 2-core machine).
2. MobileNetV3-small on a 5-class crop set (the 4 shelf products plus "background" crops of
   shelf with no product in them): accuracy on held-out crops.
3. Transfer: SSDLite trained on ``shelf`` scenes, then fine-tuned (``--weights`` its best.pt) on
   60 ``trail`` (camera-trap) scenes at ``--tr-lr`` (1e-3), against the same 60 scenes from
   scratch at the default LR for the same epochs; both scored on held-out trail scenes (target:
   fine-tuned mAP@.5 >= 2x scratch, each in <= 3 CPU minutes; measured 0.461 vs 0.191). The
   shelf run stands in for COCO weights, which this machine cannot download; its own cost is
   printed apart, as pretraining.

    .venv/bin/python bench/bench_train.py --out /tmp/bench-train
    .venv/bin/python bench/bench_train.py --skip-cls --det-size 320 --det-epochs 6
    .venv/bin/python bench/bench_train.py --skip-cls --skip-det      # the transfer rows only

Wall and CPU minutes are reported. One torch thread by default: on a shared 2-core machine two
processes with 2 OpenMP threads each slowed every step 5-10x (spinning threads), and CPU time
then measures the contention, not the training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.datasets import Dataset, load, save
from trainer.synth import generate, render

#: Background crops: side range (pixels of a 320 scene) and the largest share of a crop that
#: any product may cover, so "background" really holds no product.
BG_SIDE_PX = (24, 96)
BG_MAX_COVER = 0.08
BG_TRIES = 40


def detection_data(out: Path, n_train: int, n_val: int, seed: int, render_px: int) -> Path:
    """``n_train + n_val`` shelf scenes as COCO, the last ``n_val`` (by index) in val."""
    raw, data = out / "shelf-raw", out / f"shelf-{n_train}-{n_val}"
    if data.exists():
        return data
    generate("shelf", n_train + n_val, raw, "coco", seed=seed, size=(render_px, render_px),
             val_fraction=0, workers=2)  # fmt: skip
    ds = load(raw)
    ordered = sorted(ds.samples, key=lambda s: s.image_path.name)
    for i, sample in enumerate(ordered):
        sample.split = "train" if i < n_train else "val"
    save(Dataset("detect", ds.classes, ordered, splits={"train": "", "val": ""}), data, "coco",
         images="hardlink")  # fmt: skip
    shutil.rmtree(raw)
    return data


def trail_data(out: Path, n_train: int, n_val: int, n_test: int, seed: int, render_px: int) -> Path:
    """Camera-trap scenes as COCO: ``n_train`` to train on, ``n_val`` to pick best.pt, ``n_test``
    held out for the score (evaluate scores the test split)."""
    raw, data = out / "trail-raw", out / f"trail-{n_train}-{n_val}-{n_test}"
    if data.exists():
        return data
    total = n_train + n_val + n_test
    generate("trail", total, raw, "coco", seed=seed, size=(render_px, render_px),
             val_fraction=0, workers=2)  # fmt: skip
    ds = load(raw)
    ordered = sorted(ds.samples, key=lambda s: s.image_path.name)
    for i, sample in enumerate(ordered):
        sample.split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    splits = {"train": "", "val": "", "test": ""}
    save(Dataset("detect", ds.classes, ordered, splits=splits), data, "coco", images="hardlink")
    shutil.rmtree(raw)
    return data


def _background_crops(folder: Path, scenes: range, seed: int, per_scene: int) -> int:
    """Crops of shelf scenes where no product covers more than BG_MAX_COVER of the crop."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = 0
    for index in scenes:
        image, boxes, _ = render("shelf", index, seed)
        height, width = image.shape[:2]
        for _ in range(per_scene):
            for _try in range(BG_TRIES):
                side = int(rng.integers(*BG_SIDE_PX))
                x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
                cover = max((_overlap((x, y, x + side, y + side), b.xyxy) for b in boxes),
                            default=0.0)  # fmt: skip
                if cover <= BG_MAX_COVER:
                    cv2.imwrite(str(folder / f"bg_{index:05d}_{written:06d}.jpg"),
                                image[y : y + side, x : x + side])  # fmt: skip
                    written += 1
                    break
    return written


def _overlap(crop: tuple, box: tuple) -> float:
    ix = max(0.0, min(crop[2], box[2]) - max(crop[0], box[0]))
    iy = max(0.0, min(crop[3], box[3]) - max(crop[1], box[1]))
    return ix * iy / ((crop[2] - crop[0]) * (crop[3] - crop[1]))


def crop_data(out: Path, scenes: int, seed: int) -> Path:
    """Shelf product crops (train/val by scene) plus a 'background' class of the same size."""
    data = out / "crops"
    if data.exists():
        return data
    result = generate("shelf", scenes, data, "folders", seed=seed, val_fraction=0.2, workers=2)
    per_class = sum(result.per_class.values()) // len(result.per_class)
    per_scene = max(1, round(per_class / scenes))
    n_val = scenes // 5
    # Other scene indices than the products' (seed + 1): background is not cut from the same
    # images, so no crop of one scene lands on both sides of the split.
    _background_crops(data / "train" / "background", range(scenes - n_val), seed + 1, per_scene)
    _background_crops(data / "val" / "background", range(scenes - n_val, scenes), seed + 1,
                      per_scene)  # fmt: skip
    return data


def run(kind: str, data: Path, out: Path, args: argparse.Namespace, **kw: Any) -> dict:
    import torch

    from trainer.evaluate import evaluate
    from trainer.train import train

    run_dir = out / f"run-{kind}"
    shutil.rmtree(run_dir, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    train(out_dir=run_dir, data_dir=data, seed=args.seed, threads=args.threads, **kw)
    wall, cpu = (time.perf_counter() - wall) / 60, (time.process_time() - cpu) / 60
    report = evaluate(run_dir, data, run_dir / "eval")
    config = json.loads((run_dir / "config.json").read_text())
    metric = "accuracy" if kind == "cls" else "mAP50"
    return {"kind": kind, "task": kw["task"], "model": kw["model_name"], "size": config["size"],
            "epochs": config["epochs_run"], "train": config["split"]["train"],
            "val": report["metrics"]["images"], "wall_min": wall, "cpu_min": cpu,
            "metric": metric, "value": report["metrics"][metric],
            "extra": "" if kind == "cls" else f"mAP {report['metrics']['mAP']:.3f}",
            "mAP": report["metrics"].get("mAP"), "threads": torch.get_num_threads(),
            "best": run_dir / "best.pt"}  # fmt: skip


def transfer(args: argparse.Namespace) -> list[dict]:
    """Shelf-pretrained vs scratch on the same few trail scenes: what a pretrained start buys."""
    det = {"task": "detect", "model_name": "ssdlite320_mobilenet_v3_large", "size": args.det_size,
           "batch_size": args.det_batch}  # fmt: skip
    source = args.transfer_from
    rows = []
    if source is None:
        shelf = detection_data(args.out, args.src_train, args.det_val, args.seed, args.det_render)
        rows.append(run("shelf-src", shelf, args.out, args, epochs=args.src_epochs,
                        lr=args.det_lr, **det))  # fmt: skip
        source = rows[-1]["best"]
    trail = trail_data(args.out, args.tr_train, args.tr_val, args.tr_test, args.seed,
                       args.det_render)  # fmt: skip
    rows.append(run("scratch", trail, args.out, args, epochs=args.tr_epochs, lr=args.det_lr, **det))
    rows.append(run("finetuned", trail, args.out, args, epochs=args.tr_epochs, lr=args.tr_lr,
                    weights=source, **det))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/edgesight-bench-train"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--skip-det", action="store_true")
    p.add_argument("--skip-cls", action="store_true")
    p.add_argument("--det-train", type=int, default=600, help="training scenes")
    p.add_argument("--det-val", type=int, default=150, help="held-out scenes")
    p.add_argument("--det-render", type=int, default=320, help="scene side, px")
    p.add_argument("--det-size", type=int, default=160, help="detector net size, px")
    p.add_argument("--det-epochs", type=int, default=12)
    p.add_argument("--det-batch", type=int, default=8)
    p.add_argument("--det-lr", type=float, default=None)
    p.add_argument("--det-preset", default="default")
    p.add_argument("--cls-scenes", type=int, default=150, help="scenes cut into crops")
    p.add_argument("--cls-size", type=int, default=64)
    p.add_argument("--cls-epochs", type=int, default=10)
    p.add_argument("--cls-batch", type=int, default=32)
    p.add_argument("--skip-transfer", action="store_true")
    p.add_argument("--transfer-from", type=Path, help="source weights (default: train on shelf)")
    p.add_argument("--src-train", type=int, default=300, help="shelf scenes for the source run")
    p.add_argument("--src-epochs", type=int, default=6)
    p.add_argument("--tr-train", type=int, default=60, help="trail scenes to fine-tune on")
    p.add_argument("--tr-val", type=int, default=20, help="trail scenes that pick best.pt")
    p.add_argument("--tr-test", type=int, default=150, help="held-out trail scenes scored")
    p.add_argument("--tr-epochs", type=int, default=20)
    p.add_argument("--tr-lr", type=float, default=1e-3, help="fine-tuning peak LR (1e-3)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    if not args.skip_cls:
        data = crop_data(args.out, args.cls_scenes, args.seed)
        rows.append(run("cls", data, args.out, args, task="classify",
                        model_name="mobilenet_v3_small", epochs=args.cls_epochs,
                        size=args.cls_size, batch_size=args.cls_batch))  # fmt: skip
    if not args.skip_det:
        data = detection_data(args.out, args.det_train, args.det_val, args.seed, args.det_render)
        rows.append(run("det", data, args.out, args, task="detect",
                        model_name="ssdlite320_mobilenet_v3_large", epochs=args.det_epochs,
                        size=args.det_size, batch_size=args.det_batch, lr=args.det_lr,
                        preset=args.det_preset))  # fmt: skip
    if not args.skip_transfer:
        rows += transfer(args)
    head = f"{'run':11}{'model':32}{'size':>5}{'epochs':>7}{'train':>7}{'scored':>7}"
    head += f"{'wall min':>10}{'CPU min':>9}  metric"
    print(head)
    for r in rows:
        print(f"{r['kind']:11}{r['model']:32}{r['size']:>5}{r['epochs']:>7}{r['train']:>7}"
              f"{r['val']:>7}{r['wall_min']:>10.1f}{r['cpu_min']:>9.1f}  "
              f"{r['metric']} {r['value']:.3f} {r['extra']}")  # fmt: skip
    pair = {r["kind"]: r for r in rows if r["kind"] in ("scratch", "finetuned")}
    if len(pair) == 2:
        ratio = pair["finetuned"]["value"] / max(pair["scratch"]["value"], 1e-9)
        print(f"transfer: fine-tuned / scratch mAP@.5 = {ratio:.1f}x "
              f"({pair['finetuned']['value']:.3f} vs {pair['scratch']['value']:.3f}; "
              f"mAP {pair['finetuned']['mAP']:.3f} vs {pair['scratch']['mAP']:.3f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
