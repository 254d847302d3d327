"""The one int8 policy of every runtime, and PT2E static quantization (ExecuTorch and LiteRT).

Which layers stay fp32 (``float_module_names``) is decided here for every runtime: the first
``float_layers`` ``ConvBNAct`` blocks (the stem, then the first depthwise layer, ...) and, by
default, the classifier. The classifier matters most: with an int8 classifier the *logits* are
rounded to 8 bits, and a trained model's logits span +-100, so one step is about one logit and
near ties flip the top-1, at no gain in latency (``docs/deployment.md`` has the figures).

``pt2e_quantize`` is PyTorch 2's export-based flow (``torchao.quantization.pt2e``): export,
``prepare_pt2e`` with the runtime's quantizer (per-channel symmetric int8 weights, int8
activations from histogram observers), calibration on real images, ``convert_pt2e``.
"""
from __future__ import annotations

import torch
from torch import nn

from mobilenets.models.layers import ConvBNAct


def check_float_layers(model: nn.Module, float_layers) -> int:
    """``float_layers`` if it is an integer from 0 to the model's number of ``ConvBNAct`` blocks;
    ``ValueError`` naming ``--float-layers`` otherwise."""
    blocks = sum(isinstance(m, ConvBNAct) for m in model.modules())
    if isinstance(float_layers, bool) or not isinstance(float_layers, int) \
            or not 0 <= float_layers <= blocks:
        raise ValueError(f"--float-layers must be an integer from 0 to {blocks} (the model's "
                         f"conv blocks), got {float_layers!r}")
    return float_layers


def float_module_names(model: nn.Module, float_layers: int = 2,
                       float_classifier: bool = True) -> list[str]:
    """Names of the modules that stay fp32 in an int8 export.

    Args:
        model: A model of this package (built from ``ConvBNAct`` blocks).
        float_layers: The first N ``ConvBNAct`` blocks in forward order (the stem convolution,
            then the first depthwise convolution, ...). Default 2.
        float_classifier: Keep every ``nn.Linear`` (the classifier) fp32, so the logits are not
            rounded to 8 bits. Default True.

    Returns:
        Module names as ``model.named_modules()`` gives them, e.g. ``["features.0",
        "features.1.depthwise", "classifier"]``.
    """
    check_float_layers(model, float_layers)
    names = [n for n, m in model.named_modules() if isinstance(m, ConvBNAct)][:float_layers]
    if float_classifier:
        names += [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names


def keep_float(quantizer, names: list[str]):
    """Make a PT2E ``quantizer`` leave every node of the modules ``names`` in fp32.

    Neither ``XNNPACKQuantizer`` nor litert's ``PT2EQuantizer`` accepts ``set_module_name(name,
    None)`` (both assert), so the graph is annotated as usual and the annotation then removed from
    the nodes inside those modules (by their ``nn_module_stack``); the consumers outside keep
    theirs, so a quantize op appears where the float region ends.

    Raises:
        ValueError: (at annotation) if a name matches no node: a silent no-op here once gave
            all-int8 "float layers" files when the model was wrapped and its paths had changed.
    """
    if not names:
        return quantizer
    annotate = quantizer.annotate

    def paths(node) -> list[str]:
        return [v[0] for v in node.meta.get("nn_module_stack", {}).values()]

    def strip(gm):
        gm = annotate(gm)
        hit = set()
        for node in gm.graph.nodes:
            inside = {n for n in names for p in paths(node) if p == n or p.startswith(n + ".")}
            if inside:
                node.meta.pop("quantization_annotation", None)
                hit |= inside
        if set(names) - hit:
            raise ValueError(f"float modules not found in the exported graph: "
                             f"{sorted(set(names) - hit)}")
        return gm

    quantizer.annotate = strip
    return quantizer


def pt2e_quantize(model: nn.Module, quantizer, calibration: list[torch.Tensor],
                  float_modules: list[str] = (), fold_quantize: bool = True) -> nn.Module:
    """A float model (BN folded, eval) -> PT2E int8 reference model (a GraphModule with q/dq).

    Args:
        model: The float model.
        quantizer: The runtime's PT2E quantizer, configured (``set_global``).
        calibration: Real preprocessed batches as the model sees them; exported with a dynamic
            batch so that batches of any size run.
        float_modules: Module names to leave fp32 (``float_module_names``).
        fold_quantize: Fold the weights' quantize ops into int8 constants (ExecuTorch); LiteRT's
            converter wants them unfolded. Default True.

    Raises:
        ValueError: if ``calibration`` is empty or a float module is not found.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise ValueError("calibration holds no batch: give a few hundred real images")
    batch = torch.export.Dim("batch", min=1, max=4096)
    gm = torch.export.export(model, (calibration[0],), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(gm, keep_float(quantizer, list(float_modules)))
    with torch.no_grad():
        for b in calibration:
            prepared(b)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)
