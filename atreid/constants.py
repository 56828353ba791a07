"""Names shared by every layer: scenario/head order, modality codes, AT-USTC flags."""

from __future__ import annotations

# Head i serves scenario SCENARIOS[i]; this order is the published one and is used by
# the reference checkpoints, the model, the losses and the evaluation alike.
SCENARIOS: tuple[str, ...] = ("DT-ST", "DT-LT", "NT-ST", "NT-LT", "AD-ST", "AD-LT")
SHORT_TERM_HEADS: tuple[int, ...] = (0, 2, 4)
LONG_TERM_HEADS: tuple[int, ...] = (1, 3, 5)

# Modality codes used in tensors and arrays; tidy tables hold the names.
RGB, IR = 0, 1
MODALITY_NAMES: tuple[str, ...] = ("rgb", "ir")
MODALITY_CODES: dict[str, int] = {"rgb": RGB, "ir": IR}

# AT-USTC split flags (the F in camKK-fF-NNNN.jpg).
FLAG_TRAIN = 0
FLAG_VAL = 1
FLAG_NAMES: dict[int, str] = {
    0: "train",
    1: "val",
    2: "DT-ST query",
    3: "DT-LT query",
    4: "NT-ST query",
    5: "NT-LT query",
    6: "DT-ST gallery",
    7: "DT-LT gallery",
    8: "NT-ST gallery",
    9: "NT-LT gallery",
}
RGB_CAMERAS = range(1, 9)
IR_CAMERAS = range(9, 17)

# The result table's random-ranking row (atreid.report.table); no variant may take the name.
CHANCE_ROW = "chance"
# Variant names refused in any letter case (lower-case name -> why), so that no table row,
# plot label or file name on a case-insensitive filesystem can be confused with them.
RESERVED_VARIANT_NAMES: dict[str, str] = {
    CHANCE_ROW: "the result table's random-ranking row",
}

# `atreid export-onnx` (atreid.engine.export): the ONNX opsets it writes (the torch.onnx
# dynamo exporter emits 18 or later) and the default. Here so the CLI can show them
# without importing torch.
ONNX_OPSETS: tuple[int, ...] = (18, 19, 20, 21)
ONNX_DEFAULT_OPSET = 18

# How the classifiers are sized (atreid.model.uniat.head_classes): "reference" (the released
# code, default) or "by_loss". Here, not in the model: the loss checks it too.
CLASSIFIER_SIZINGS: tuple[str, ...] = ("reference", "by_loss")
