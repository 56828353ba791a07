"""Input pipeline: training images/s per DataLoader worker, atreid's vs the authors' way.

Both decode 256x128 JPEGs (the paper's input size; AT-USTC's crops are stored as JPEG
files) and apply the paper's training transforms (Resize, Pad 10 + RandomCrop, flip 0.5,
ToTensor, ImageNet Normalize, RandomErasing 0.5), then collate batches of 64:

- ``atreid``: :class:`atreid.engine.dataset.TrainDataset` as the trainer builds it
  (:func:`atreid.engine.dataset.build_train_loader`: each sample's augmentation seeded,
  :class:`atreid.engine.transforms.SeededTransform`);
- ``authors``: a dataset written as the released code's (``Image.open(path).convert('RGB')``
  then a torchvision ``Compose`` of the same transforms, global RNGs).

Each pass runs in one DataLoader worker process (one torch thread, as DataLoader workers
run), measured from its first batch, the two interleaved; the rate is images per CPU-second
of the worker (each item carries the worker's ``time.process_time()``), which other jobs on
a shared machine barely change; wall images/s are printed beside it. The best of
``--reps`` passes counts.
A GPU that consumes R images/s needs ceil(R / per-worker rate) workers.

    python benchmarks/loader.py                         # 512 images, 3 passes each
    python benchmarks/loader.py --images 256 --reps 2 --target 1500
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    """Person-crop-like JPEGs: smooth colour fields with fine noise (pure noise would decode
    slower than photographs do), quality 95."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    names = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(h // 16, w // 16, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
        image = np.clip(image + rng.integers(-12, 13, size=image.shape), 0, 255).astype(np.uint8)
        name = f"p{i // 16:03d}/img{i:05d}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name, quality=95)
        names.append(name)
    return names


class AuthorsStyleDataset:
    """The released code's training dataset, transcribed: open, convert, transform."""

    def __init__(self, root: Path, names: list[str], transform) -> None:
        self.root, self.names, self.transform = root, names, transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        from PIL import Image

        image = Image.open(self.root / self.names[i]).convert("RGB")
        return self.transform(image), i // 16


def authors_transform(size: tuple[int, int]):
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.Pad(10), T.RandomCrop(size),
                      T.RandomHorizontalFlip(p=0.5), T.ToTensor(),
                      T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                      RandomErasing(probability=0.5, min_area=0.02, max_area=0.4, mode="pixel", max_count=1,
                                    device="cpu")])


class CpuStamped:
    """``dataset[key]`` plus the worker process's CPU seconds when it was made."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return (*self.dataset[key], time.process_time())


def one_pass(dataset, keys, batch: int) -> tuple[float, float]:
    """(images per CPU-second of the worker, images per wall second) of one DataLoader worker
    process loading and collating every key in batches, from its first batch on (start-up
    left out). CPU seconds are the worker's own: other jobs on the machine barely change them."""
    from torch.utils.data import DataLoader

    batches = [keys[start:start + batch] for start in range(0, len(keys), batch)]
    loader = iter(DataLoader(CpuStamped(dataset), batch_sampler=batches, num_workers=1, prefetch_factor=4))
    *_, stamps = next(loader)
    cpu_start, started, count = float(stamps.max()), time.perf_counter(), 0
    for images, *_, stamps in loader:
        count += len(images)
        cpu_end = float(stamps.max())
    return count / (cpu_end - cpu_start), count / (time.perf_counter() - started)


def measure(args: argparse.Namespace) -> dict:
    import pandas as pd

    from atreid.engine.dataset import TrainDataset
    from atreid.engine.transforms import train_transform

    size = tuple(args.size)
    with tempfile.TemporaryDirectory(prefix="atreid-loader-bench-") as tmp:
        root = Path(tmp)
        names = write_jpegs(root, args.images, size)
        index = pd.DataFrame({"path": names, "person_label": [i // 16 for i in range(len(names))],
                              "outfit_label": [i // 16 for i in range(len(names))],
                              "modality": ["rgb" if i % 2 else "ir" for i in range(len(names))]})
        ours = TrainDataset(index, root, train_transform(size, pad=10, flip=0.5, random_erasing=0.5))
        theirs = AuthorsStyleDataset(root, names, authors_transform(size))
        ours_keys = [(i, 1000 + i) for i in range(len(names))]
        theirs_keys = list(range(len(names)))
        rates: dict[str, list[tuple[float, float]]] = {"atreid": [], "authors": []}
        for _ in range(args.reps):
            rates["atreid"].append(one_pass(ours, ours_keys, args.batch))
            rates["authors"].append(one_pass(theirs, theirs_keys, args.batch))
    return {name: max(cpu for cpu, _ in r) for name, r in rates.items()} | {
        f"{name}_wall": max(wall for _, wall in r) for name, r in rates.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--target", type=float, default=1500.0, help="GPU images/s the workers must feed")
    args = parser.parse_args(argv)
    rates = measure(args)
    h, w = args.size
    print(f"| loader | {h}x{w} JPEG images per worker CPU-second | wall images/s | workers for "
          f"{args.target:,.0f} images/s |")
    print("|---|---:|---:|---:|")
    for name in ("atreid", "authors"):
        rate = rates[name]
        print(f"| {name} | {rate:.0f} | {rates[name + '_wall']:.0f} | {math.ceil(args.target / rate)} |")
    print(f"atreid / authors: {rates['atreid'] / rates['authors']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
