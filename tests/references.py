"""Keras Applications reference models for the weight-import tests, and how outputs are compared.

The references are built offline (``weights=None``) with randomised BatchNorm parameters whose
moving statistics are calibrated on random images, so that activations neither vanish nor saturate
(fresh BN statistics would make every comparison trivial). Import ``keras`` from here: this module
imports it on the torch backend (the backend is fixed by the first import).
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

#: Logits (and pooled features) must agree this closely, as ``max_diff`` measures: relative to
#: the reference's largest value, as ``deploy.mobile.verify`` checks exports. Two float32
#: implementations differ by up to ~3e-5 of it on the kernels tried (ATen AVX2 and scalar,
#: oneDNN on and off, 1 and 2 threads); a wrong BN epsilon, padding or layout moves the logits
#: by ~1 of it.
TOL = 1e-4
#: For the unpooled last feature map (include_top=False): up to ~7e-5 of its largest value
#: (ReLU6: 6) on those kernels; its spatial mean is compared at ``TOL``.
FEATURE_MAP_TOL = 5e-4


def max_diff(a, b) -> float:
    """max |a - b| in units of the reference ``b``'s largest magnitude (at least 1), in float64:
    float32 rounding grows with the values, so an absolute bound would hold on some kernels only."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def assert_meaningful(ref: np.ndarray) -> None:
    """The reference output must depend on the input, else agreement proves little."""
    assert np.abs(ref[0] - ref[1]).max() > 1e-2, "reference output does not depend on the input"


def keras_reference(alpha: float, res: int, include_top: bool = True, classes: int = 1000,
                    seed: int = 0, app: str = "MobileNet", any_size: bool = False):
    """A Keras MobileNet (or ``app="MobileNetV2"``) with random, calibrated BN parameters
    (logits out: no softmax), built for ``res`` x ``res`` inputs, or for any size
    (``input_shape=(None, None, 3)``; calibrated at ``res``) with ``any_size``."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, app)(
        input_shape=(None, None, 3) if any_size else (res, res, 3), alpha=alpha, weights=None,
        include_top=include_top, classes=classes, classifier_activation=None)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer in bns:
        c = layer.gamma.shape[0]
        _, _, mean, var = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, c).astype("float32"),
                           rng.normal(0, 0.2, c).astype("float32"), mean, var])
        layer.momentum = 0.0  # one training call sets the moving statistics to the batch's
    model(rng.normal(size=(4, res, res, 3)).astype("float32"), training=True)
    for layer in bns:
        layer.momentum = 0.99
        gamma, beta, mean, var = layer.get_weights()
        c = gamma.shape[0]
        layer.set_weights([gamma, beta,
                           mean + (rng.normal(0, 0.05, c) * np.sqrt(var)).astype("float32"),
                           var * rng.uniform(0.8, 1.25, c).astype("float32")])
    if include_top:
        head = model.get_layer("predictions" if app == "MobileNetV2" else "conv_preds")
        kernel, bias = head.get_weights()
        head.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])
    return model


def keras_forward(model, x: torch.Tensor) -> np.ndarray:
    """Keras output for an NCHW batch, returned NCHW (feature maps) or (N, K) (logits)."""
    out = keras.ops.convert_to_numpy(model(x.permute(0, 2, 3, 1).numpy(), training=False))
    return out.transpose(0, 3, 1, 2) if out.ndim == 4 else out
