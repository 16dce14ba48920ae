"""The three networks, built from Keras layers alone (no downloaded weights).

- ``baseline``: the plain CNN classifier this product grew from (Conv2D/MaxPooling/Dropout/Dense,
  120x120, four-way softmax over the image's defect class), kept so users can see how far past it we are.
- ``seg``: a small fully convolutional two-headed network for grayscale tiles: per-class sigmoid masks
  at 1/``output_stride`` resolution and a per-class presence head for gating. Depthwise-separable
  residual blocks keep it to a few hundred million multiply-adds on a 256x1600 tile, so it can run at
  line rate on a CPU once exported. Spatial input size is left open, so it trains on crops and runs on
  full tiles.
- ``cls``: a compact image classifier for the labelled-image layout (NEU's six classes).

Every model takes grayscale pixels in 0..255 and scales them itself, so the exported graph carries its
own preprocessing and the edge cannot get it wrong.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from steel_train.config import ModelConfig

NUM_SEG_CLASSES = 4
# Keras' default 0.99 leaves the moving statistics far from the batch ones for the first few hundred
# steps; our data sets are small, so validation would lag training by epochs.
BN_MOMENTUM = 0.9


# The seg encoder's layers are named ENCODER_PREFIX...: fit.init_encoder copies them by name from
# another model that has the same encoder (e.g. a cls model with model.arch=seg_encoder trained on NEU).
ENCODER_PREFIX = "enc_"


def _conv_bn(x: Any, filters: int, kernel: int = 3, stride: int = 1, name: str | None = None) -> Any:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=name and f"{name}_bn")(x)
    return layers.ReLU()(x)


def _sep_block(x: Any, filters: int, stride: int = 1, name: str | None = None) -> Any:
    """Depthwise 3x3 + pointwise 1x1, with a residual connection where shapes allow."""
    def named(part: str) -> str | None:
        return name and f"{name}_{part}"

    shortcut = x
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=named("dw"))(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=named("dw_bn"))(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=named("pw"))(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=named("pw_bn"))(y)
    if stride == 1 and shortcut.shape[-1] == filters:
        y = layers.Add()([y, shortcut])
    return layers.ReLU()(y)


def _seg_encoder(image: Any, cfg: ModelConfig) -> tuple[Any, dict[int, Any]]:
    """Scale, optional downsampling, stride-2 stem, ``depth`` stride-2 stages; features by stride."""
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(image)
    if cfg.stem == "patch":
        # One learned k x k, stride-k convolution on the full-resolution pixels in place of average pooling and a
        # stride-2 3x3 stem: the same feature size and nearly the same cost, but thin streaks and small spots reach
        # the encoder through learned filters instead of being averaged away first.
        k = 2 * cfg.input_downsample
        x = layers.Conv2D(cfg.width, k, strides=k, padding="valid", use_bias=False, name=f"{ENCODER_PREFIX}stem")(x)
        x = layers.ReLU()(layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{ENCODER_PREFIX}stem_bn")(x))
    else:
        if cfg.input_downsample > 1:
            x = layers.AveragePooling2D(cfg.input_downsample, name="downsample")(x)
        x = _conv_bn(x, cfg.width, stride=2, name=f"{ENCODER_PREFIX}stem")  # 1/2
    features = {2: x}
    stride = 2
    for stage in range(cfg.depth):
        channels = min(cfg.width * 2 ** (stage + 1), cfg.width * 16)
        stride *= 2
        x = _sep_block(x, channels, stride=2, name=f"{ENCODER_PREFIX}{stage + 1}a")
        x = _sep_block(x, channels, name=f"{ENCODER_PREFIX}{stage + 1}b")
        features[stride] = x
    return x, features


def build_seg(cfg: ModelConfig) -> keras.Model:
    """Encoder of ``depth`` stride-2 stages after a stride-2 stem; top-down decoder to 1/output_stride."""
    image = keras.Input((None, None, 1), name="image")
    x, features = _seg_encoder(image, cfg)
    stride = max(features)

    # Presence head: does each class appear anywhere in the tile? Max pooling finds a small defect
    # that average pooling would dilute.
    pooled = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    pooled = layers.Dropout(cfg.dropout)(pooled)
    presence = layers.Dense(NUM_SEG_CLASSES, activation="sigmoid", name="presence")(pooled)

    dec_channels = max(cfg.width * 2, 16)
    y = layers.Conv2D(dec_channels, 1, use_bias=False)(x)
    while stride > cfg.output_stride:
        stride //= 2
        y = layers.UpSampling2D(2, interpolation="bilinear")(y)
        if stride in features:
            skip = layers.Conv2D(dec_channels, 1, use_bias=False)(features[stride])
            y = layers.Add()([y, skip])
        y = _sep_block(y, dec_channels)
    masks = layers.Conv2D(NUM_SEG_CLASSES, 1, activation="sigmoid", name="masks")(y)
    return keras.Model(image, {"masks": masks, "presence": presence}, name="steel_seg")


def build_cls(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """Plain stages of one 3x3 conv + BN + ReLU and max pooling, channels doubling; global pooling, softmax.

    One conv per stage at full input resolution keeps the fine texture that separates NEU's classes
    while costing ~80M multiply-adds at 128x128; a stride-2 stem with two convs per stage was no cheaper
    to train and stalled near 97% training accuracy.

    ``model.arch=seg_encoder`` puts the seg network's encoder (same layer names) under the same head
    instead, so real labelled images (NEU) can pre-train the seg encoder (``fit.init_encoder``).
    """
    image = keras.Input((cfg.input_height, cfg.input_width, 1), name="image")
    if cfg.arch == "seg_encoder":
        x, _ = _seg_encoder(image, cfg)
    else:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(image)
        for stage in range(cfg.depth):
            x = _conv_bn(x, cfg.width * 2**stage)
            x = layers.MaxPooling2D(2)(x)
    # Average pooling describes a texture, max pooling catches one local feature (an inclusion, a pit).
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dropout(cfg.dropout)(x)
    probs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(image, probs, name="steel_cls")


def build_baseline(cfg: ModelConfig, num_classes: int = NUM_SEG_CLASSES) -> keras.Model:
    """The original notebook's plain CNN: Conv2D/MaxPooling blocks, Flatten, Dense, Dropout, softmax."""
    image = keras.Input((cfg.input_height, cfg.input_width, 1), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(image)
    for stage in range(cfg.depth):
        x = layers.Conv2D(cfg.width * 2**stage, 3, activation="relu", padding="same")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(cfg.dropout)(x)
    probs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(image, probs, name="steel_baseline")
