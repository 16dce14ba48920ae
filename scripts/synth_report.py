"""Compare the synthetic strip with the real Severstal sample: two contact sheets and a statistics table.

    PYTHONPATH=edge:train:export python scripts/synth_report.py /tmp/synth_report --images 200

Writes ``synth_sheet.png`` and ``real_sheet.png`` (mask outlines in the class colours) into the output
folder and prints class counts, defect-free share and mask-area percentiles per class, synthetic next to
real next to the full Kaggle train set. The synthetic side goes through ``write_dataset`` and is read back
exactly like the real folder, so the comparison also checks the files and CSV it writes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from steel_edge import viz
from steel_edge.data import rle, synth
from steel_edge.data.severstal import load_severstal

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "severstal"


@dataclass
class Stats:
    """One column of the table: a data set's label statistics."""

    images: int
    defect_free: float  # share of images without any label
    multi: float  # share of defective images with two or more classes
    counts: dict[int, int]  # images per class
    areas: dict[int, list[int]] | None  # mask area per (image, class) pair; None where unknown


# Kaggle train set (12,568 images): image counts per class and the share of defect-free images.
KAGGLE = Stats(12568, 0.470, 0.064, {1: 897, 2: 247, 3: 5150, 4: 801}, None)
# Published mean mask area per (image, class) pair on the Kaggle train set, for the area rows.
KAGGLE_AREA = {1: "mean ~4.4k", 2: "~2-5k", 3: "mean ~25k", 4: "mean ~33k"}


def load(folder: Path) -> tuple[list[str], dict[str, dict[int, np.ndarray]]]:
    """Image names and decoded masks ({image: {class: mask}}) of a Severstal-layout folder.

    Read through the product's own loader, so every file and row is validated on the way.
    """
    ds = load_severstal(folder)
    labels = {item.image_id: {c: rle.decode(r) for c, r in item.rles.items() if r} for item in ds.images}
    return [item.image_id for item in ds.images], labels


def stats(labels: dict[str, dict[int, np.ndarray]]) -> Stats:
    defective = [m for m in labels.values() if m]
    areas = {k: [int(m[k].sum()) for m in defective if k in m] for k in range(1, 5)}
    return Stats(
        images=len(labels),
        defect_free=1 - len(defective) / max(1, len(labels)),
        multi=sum(len(m) > 1 for m in defective) / max(1, len(defective)),
        counts={k: len(v) for k, v in areas.items()},
        areas=areas,
    )


def sheet(folder: Path, names: list[str], labels: dict[str, dict[int, np.ndarray]], path: Path) -> None:
    tiles, captions = [], []
    for name in names:
        image = cv2.imread(str(folder / "train_images" / name), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise SystemExit(f"cannot read {folder / 'train_images' / name}")
        masks = np.zeros((4, *image.shape), np.uint8)
        for k, mask in labels[name].items():
            masks[k - 1] = mask
        tiles.append(viz.draw_mask_outlines(image, masks, thickness=2))
        captions.append(f"{name}  classes {sorted(labels[name]) or '-'}")
    cv2.imwrite(str(path), viz.contact_sheet(tiles, cols=2, labels=captions, scale=0.5))


def area_cell(column: Stats, k: int) -> str:
    if column.areas is None:
        return KAGGLE_AREA[k]
    areas = column.areas[k]
    if not areas:
        return "-"
    p10, p50, p90 = np.percentile(areas, [10, 50, 90]) / 1000
    return f"{p10:.1f}/{p50:.1f}/{p90:.1f} m{np.mean(areas) / 1000:.1f}k"


def table(columns: dict[str, Stats]) -> str:
    lines = [f"{'':28}" + "".join(f"{name:>22}" for name in columns)]

    def add(label: str, cells: list[str]) -> None:
        lines.append(f"{label:28}" + "".join(f"{c:>22}" for c in cells))

    add("images", [str(c.images) for c in columns.values()])
    add("defect-free share", [f"{100 * c.defect_free:.1f}%" for c in columns.values()])
    add("two+ classes (of defective)", [f"{100 * c.multi:.1f}%" for c in columns.values()])
    for k in range(1, 5):
        add(
            f"class {k} images",
            [f"{c.counts[k]} ({100 * c.counts[k] / c.images:.1f}%)" for c in columns.values()],
        )
    for k in range(1, 5):
        add(f"class {k} area p10/p50/p90", [area_cell(c, k) for c in columns.values()])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the contact sheets")
    parser.add_argument("--images", type=int, default=200, help="synthetic images to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", type=int, default=24, help="synthetic images on the contact sheet")
    parser.add_argument("--real", type=Path, default=REAL, help="real Severstal-layout folder")
    parser.add_argument("--dataset", type=Path, help="keep the synthetic data set here (default: a temp dir)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    for _ in synth.stream(args.seed, 50):
        pass
    per_frame = (time.perf_counter() - start) / 50
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dataset or Path(tmp)
        summary = synth.write_dataset(folder, args.images, args.seed)
        names, labels = load(folder)
        sheet(folder, names[: args.sheet], labels, args.out / "synth_sheet.png")
        columns = {"synthetic": stats(labels)}
    print(
        f"generate(): {1000 * per_frame:.1f} ms/frame in a stream; write_dataset: {args.images} images "
        f"in {summary['seconds']:.1f} s"
    )
    if (args.real / "train.csv").is_file():
        real_names, real_labels = load(args.real)
        sheet(args.real, real_names, real_labels, args.out / "real_sheet.png")
        columns["real sample"] = stats(real_labels)
    else:
        print(f"real data not found at {args.real}; synthetic column only", file=sys.stderr)
    columns["Kaggle train"] = KAGGLE
    print(table(columns))
    print(f"contact sheets in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
