"""The one config object a training run reads: data, model, fit, post-processing, distribution.

Defaults per model kind live in ``configs/train_<kind>.yaml``; these classes define the keys, their
bounds and descriptions. Unknown keys are rejected, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from steel_edge.configfile import load_config

CONFIG_VERSION = 1
ModelKind = Literal["seg", "cls", "baseline"]
# The post-processing parameters tuning can search (steel_train.tune), in PostprocessParams' names.
TunedKey = Literal["presence_threshold", "pixel_threshold", "min_component", "min_area"]
TUNED_KEYS: tuple[TunedKey, ...] = get_args(TunedKey)
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentConfig(_Strict):
    hflip: bool = Field(True, description="random left-right flips (the strip looks the same both ways)")
    vflip: bool = Field(True, description="random top-bottom flips")
    brightness: float = Field(0.1, ge=0, le=0.5, description="max additive brightness change, fraction of range")
    contrast: float = Field(0.15, ge=0, le=0.9, description="max relative contrast change")
    translate: float = Field(
        0.0, ge=0, le=0.5, description="cls and baseline: random shift of up to this fraction of each side, the "
        "uncovered border filled by reflection (seg training already moves its crops over the frame)"
    )


class DataConfig(_Strict):
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of images held out for validation and tuning")
    split_seed: int = Field(0, description="seed of the train/validation split (stratified by class set)")
    folds: int | None = Field(
        None, ge=2, le=20, description="k-fold validation instead of val_fraction: fold `fold` of `folds` is held out"
    )
    fold: int = Field(0, ge=0, description="which fold is the validation set when `folds` is set")
    test_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of every --data folder's images (stratified by class set, chosen by the "
        "folder's name and test_seed, so wherever the data lives) kept apart as a test set: never trained, "
        "stopped or tuned on, scored once at the end with the tuned post-processing (metrics.json \"test\"); "
        "`steel-train evaluate --split test` scores another model on the same frames"
    )
    test_seed: int = Field(0, description="seed of the test split (fixed: change it only to start a new protocol)")
    oof_folds: int | None = Field(
        None, ge=2, le=20, description="seg, for scarce data: train this many fold models, tune the post-processing "
        "on their out-of-fold predictions (every image scored once, by a model that never saw it), then train the "
        "final model on every image for fit.epochs"
    )
    batch_size: int = Field(8, ge=1, le=1024, description="images (or crops) per step")
    crop_height: int = Field(256, ge=32, description="seg: training crop height (full tile height is 256)")
    crop_width: int = Field(512, ge=32, description="seg: training crop width; inference runs at full width")
    crops_per_image: int = Field(2, ge=1, le=16, description="seg: random crops drawn from each image per epoch")
    defect_crop_bias: float = Field(
        0.7, ge=0, le=1, description="seg: probability a crop is centred on a labelled defect when the image has one"
    )
    crop_centre: Literal["pixel", "class"] = Field(
        "pixel", description="seg: a defect-centred crop is centred on a random defect pixel's column (pixel: large "
        "defects win), or on one of a random class present (class: a small rare defect beside a large one is "
        "centred as often)"
    )
    balance_power: float = Field(
        0.5, ge=0, le=1, description="seg, with balance_rare: an image with a rare class repeats "
        "(most common class count / its class count)^balance_power times (0.5: square root; 1: full balance), "
        "up to max_repeat"
    )
    balance_rare: bool = Field(True, description="repeat images holding rare classes so each class is seen enough")
    max_repeat: int = Field(4, ge=1, le=32, description="cap on how often one rare image is repeated per epoch")
    source_weights: list[float] | None = Field(
        None, description="per --data folder sampling weight (e.g. down-weight synthetic data); default all 1"
    )
    cache: bool = Field(True, description="cache decoded images in memory (fits for a few thousand tiles)")
    on_bad_row: Literal["raise", "skip"] = Field(
        "raise", description="a bad label row or image: stop with its file and line, or skip it with a warning"
    )
    copy_paste: float = Field(
        0.0, ge=0, le=1, description="seg: probability that a training crop gets one labelled defect pasted in from "
        "another training image of the same --data folder (its pixels, mask and class; never from held-out images)"
    )
    erase_defects: float = Field(
        0.0, ge=0, le=1, description="seg: probability that a training crop has one labelled defect covered with "
        "defect-free strip from the same rows of the crop (its labels cleared): real strip without that defect, "
        "a negative for the presence head; done before copy_paste"
    )
    augment: AugmentConfig = AugmentConfig()


    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} does not exist with folds={self.folds} (0..{self.folds - 1})")
        if self.folds is not None and self.oof_folds is not None:
            raise ValueError("set either folds (one fold held out) or oof_folds (all folds, then a final model)")
        if self.test_fraction and self.oof_folds is not None:
            raise ValueError("set either test_fraction (a test set kept apart) or oof_folds (out-of-fold scoring of "
                             "every image), not both: with oof_folds add --set data.test_fraction=0")
        return self


class ModelConfig(_Strict):
    input_height: int = Field(256, ge=16, description="network input height (seg: full tile height)")
    input_width: int = Field(1600, ge=16, description="network input width (seg: full tile width)")
    width: int = Field(16, ge=4, le=256, description="channels of the first stage; later stages multiply it")
    depth: int = Field(4, ge=2, le=6, description="encoder stages (each halves the resolution)")
    output_stride: Literal[1, 2, 4, 8] = Field(
        4, description="seg: masks come out at 1/output_stride of the network's input"
    )
    input_downsample: int = Field(
        1, ge=1, le=4, description="seg: average-pool the tile by this factor first (the labels are coarse polygons); "
        "tile and crop sizes must be multiples of input_downsample x 2^(depth+1)"
    )
    stem: Literal["pool", "patch"] = Field(
        "pool", description="seg encoder's first layer: pool (average-pool by input_downsample, then a stride-2 3x3 "
        "convolution) or patch (one learned (2 x input_downsample)-square convolution of that stride on the "
        "full-resolution pixels: the same feature size, fine detail kept)"
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the classifier / presence head")
    arch: Literal["plain", "seg_encoder"] = Field(
        "plain", description="cls: plain conv stages, or the seg network's encoder (same width, depth, "
        "input_downsample) so a cls run on real labelled images can pre-train a seg model's encoder "
        "(fit.init_encoder)"
    )


class FitConfig(_Strict):
    epochs: int = Field(30, ge=1, description="upper bound; early stopping usually ends sooner")
    learning_rate: float = Field(2e-3, gt=0, le=1, description="peak learning rate (Adam)")
    schedule: Literal["cosine", "plateau", "constant"] = Field("cosine", description="learning-rate schedule")
    warmup_epochs: int = Field(1, ge=0, description="linear warm-up epochs before the schedule")
    patience: int = Field(6, ge=1, description="early stopping: epochs without val improvement before stopping")
    restore_best: bool = Field(
        True, description="keep the weights of the best validation epoch; false keeps the last epoch's (no selection "
        "on the validation images, e.g. when they are the out-of-fold images being scored)"
    )
    dice_weight: float = Field(1.0, ge=0, description="seg: weight of the soft-Dice term beside BCE")
    dice_classes: Literal["all", "present"] = Field(
        "all", description="seg: which classes the batch's soft-Dice term averages over. all: every class, and a "
        "class absent from the batch scores 1/(1 + predicted area), so any output for it is punished in every batch "
        "without it; a class in 1 batch of 20 (class 2 on real frames) is pushed to 0 everywhere. present: only the "
        "classes with a labelled pixel in the batch (BCE alone weighs the others)"
    )
    presence_weight: float = Field(0.5, ge=0, description="seg: weight of the presence-head BCE")
    weight_decay: float = Field(0.0, ge=0, le=0.1, description="decoupled weight decay (AdamW); 0 = plain Adam")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="cls/baseline: label smoothing of the targets")
    seed: int = Field(0, description="seeds Python, numpy and TensorFlow")
    init_weights: str | None = Field(
        None, description="start from this model's weights (a .keras file or a run folder) instead of random ones, "
        "e.g. pre-train on synthetic frames, then fine-tune on real ones; the architecture must match"
    )
    init_encoder: str | None = Field(
        None, description="seg: start the encoder (stem and stages) from this model's encoder (a .keras file or a "
        "run folder of a seg model, or of a cls model with model.arch=seg_encoder, e.g. trained on NEU); the rest "
        "starts random; width and depth must match"
    )
    soup: int = Field(
        1, ge=1, le=16, description="seg: fine-tune this many times from fit.init_weights (seeds seed, seed+1, ...) "
        "and average the weights: a uniform model soup, steadier than one fine-tuning at one model's inference cost "
        "(training takes this many times longer)"
    )
    steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch (None = whole data set)")


class PostprocessDefaults(_Strict):
    """Starting values (docs/design.md: what the best solutions used); tuning on validation data replaces them."""

    gate: Literal["hard", "soft", "none"] = "hard"
    presence_threshold: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.5)
    pixel_threshold: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.5)
    min_area: tuple[int, int, int, int] = (600, 600, 900, 2000)
    min_component: tuple[int, int, int, int] = (150, 150, 150, 150)
    tune: bool = Field(True, description="tune per-class thresholds and areas on the validation split")
    tune_keys: list[TunedKey] = Field(
        default_factory=lambda: list(TUNED_KEYS), min_length=1,
        description="the parameters tuning searches; the others keep the values above (on a few dozen images, "
        "e.g. [pixel_threshold, min_area]: fewer free parameters, less noise tuned in)"
    )
    tune_min_precision: float = Field(
        0.0, ge=0, le=1, description="floor on each class's image-level precision on the tuning images: tuning takes "
        "the best Kaggle Dice among settings meeting both floors (or the setting closest to them); 0 = Dice alone"
    )
    tune_min_recall: float = Field(
        0.0, ge=0, le=1, description="floor on each class's image-level recall on the tuning images (see "
        "tune_min_precision): Dice alone would call a rare class never when its masks are rough"
    )
    tune_skip: bool = Field(
        True, description="after tuning, set the tile-level skip rule (postprocess skip_below, what a cascade export "
        "uses to skip the mask decoder): each class's hard-gate presence threshold, or for a class whose threshold "
        "is 0, half its lowest presence among the tuning frames where it was found correctly, at most 0.05"
    )
    tune_on: list[int] | None = Field(
        None, description="positions (0-based, in --data order) of the data folders whose held-out images the tuning "
        "and its out-of-fold estimates use, e.g. [1] for the real images when synthetic frames come first; "
        "default all"
    )


class DistributeConfig(_Strict):
    strategy: Literal["default", "mirrored", "multi_worker"] = Field(
        "default",
        description="default: one device; mirrored: all local GPUs; multi_worker: machines listed in TF_CONFIG",
    )


class TrainConfig(_Strict):
    config_version: Literal[1] = 1
    model_kind: ModelKind = "seg"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    fit: FitConfig = FitConfig()
    postprocess: PostprocessDefaults = PostprocessDefaults()
    distribute: DistributeConfig = DistributeConfig()

    @model_validator(mode="after")
    def _pretraining_fits_the_kind(self) -> TrainConfig:
        if self.model.arch != "plain" and self.model_kind != "cls":
            raise ValueError(f"model.arch={self.model.arch} is for the cls model (the seg model has that encoder)")
        if self.fit.init_encoder and self.model_kind != "seg":
            raise ValueError("fit.init_encoder is for the seg model (it copies a seg encoder's weights)")
        if self.fit.init_encoder and self.fit.init_weights:
            raise ValueError("set fit.init_weights (the whole model) or fit.init_encoder (its encoder), not both")
        if self.fit.soup > 1 and (self.model_kind != "seg" or not self.fit.init_weights):
            # Weights average well only between fine-tunings of one pre-trained model (they stay in its basin);
            # runs from random starts end in different basins and their average is no model at all.
            raise ValueError(f"fit.soup={self.fit.soup} averages fine-tunings of one pre-trained model: it is for the "
                             "seg model and needs fit.init_weights")
        if self.model_kind == "seg":
            # The decoder adds each encoder stage's features to the upsampled deeper ones, so every stage must
            # halve the size exactly: pooling by input_downsample, then a stride-2 stem and depth stride-2 stages.
            step = self.model.input_downsample * 2 ** (self.model.depth + 1)
            sizes = {"model.input_height": self.model.input_height, "model.input_width": self.model.input_width,
                     "data.crop_height": self.data.crop_height, "data.crop_width": self.data.crop_width}
            bad = [f"{key}={size}" for key, size in sizes.items() if size % step]
            if bad:
                raise ValueError(
                    f"{', '.join(bad)} not a multiple of {step} (model.input_downsample={self.model.input_downsample}"
                    f" x 2^(model.depth={self.model.depth} + 1)): the seg network halves the size "
                    f"{self.model.depth + 1} times after pooling and adds the stages back together; lower "
                    "model.depth or model.input_downsample, or pick sizes that divide")
        return self


def default_config_path(kind: ModelKind) -> Path:
    return REPO_CONFIGS / f"train_{kind}.yaml"


# What differs between model kinds; the YAML files in configs/ and CLI flags override these.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "seg": {},
    "cls": {
        "model.input_height": 128, "model.input_width": 128, "model.width": 16, "model.depth": 5,
        # NEU's classes differ partly in brightness and contrast: augmenting those hurt (94.9% vs 98.6%
        # after 10 epochs); flips and quarter turns do not change a surface texture's class.
        "data.batch_size": 32, "data.balance_rare": False, "data.augment.brightness": 0.0,
        "data.augment.contrast": 0.0, "fit.epochs": 40, "fit.learning_rate": 2e-3, "fit.patience": 40,
        "fit.restore_best": False,
        # weight decay + label smoothing: 98.6% -> 99.5% on the hardest NEU split (seed 1)
        "fit.weight_decay": 1e-4, "fit.label_smoothing": 0.1,
        # random shifts of up to 1/8 of the side: 99.26% -> 99.72% pooled 5-fold over the 1,080 NEU images
        "data.augment.translate": 0.125,
    },
    "baseline": {
        # the original notebook: a plain CNN on 120x120 Severstal images, four-way softmax
        "model.input_height": 120, "model.input_width": 120, "model.width": 32, "model.depth": 3,
        "model.dropout": 0.5, "data.batch_size": 32, "data.balance_rare": False,
        "data.augment.vflip": False, "fit.epochs": 40, "fit.learning_rate": 1e-3, "fit.schedule": "constant",
        "fit.warmup_epochs": 0, "fit.patience": 5,
    },
}


def load_train_config(
    kind: ModelKind, path: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The config for a run: ``path`` or the kind's default YAML (if the checkout has it), then flags."""
    if path is None:
        candidate = default_config_path(kind)
        path = candidate if candidate.is_file() else None
    merged = {"model_kind": kind, **(overrides or {})}
    return load_config(TrainConfig, path, merged, base=KIND_DEFAULTS[kind])
