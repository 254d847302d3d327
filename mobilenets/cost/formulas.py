"""The paper's cost formulas (section 3) as plain functions, and Table 3 computed from them.

Names follow the paper: ``d_k`` kernel size D_K, ``m`` input channels M, ``n`` output channels N,
``d_f`` feature-map size D_F, ``alpha`` the width multiplier, ``rho`` the resolution multiplier.
Mult-Adds are multiply-accumulates per image; biases, BatchNorm and activations are not counted,
as in the paper.
"""
from __future__ import annotations


def conv_madds(d_k: float, m: float, n: float, d_f: float) -> float:
    """Equation 2: a standard convolution costs D_K * D_K * M * N * D_F * D_F Mult-Adds."""
    return d_k * d_k * m * n * d_f * d_f


def depthwise_madds(d_k: float, m: float, d_f: float) -> float:
    """Equation 4: a depthwise convolution costs D_K * D_K * M * D_F * D_F Mult-Adds."""
    return d_k * d_k * m * d_f * d_f


def pointwise_madds(m: float, n: float, d_f: float) -> float:
    """The 1x1 half of equation 5: M * N * D_F * D_F Mult-Adds."""
    return m * n * d_f * d_f


def separable_madds(d_k: float, m: float, n: float, d_f: float,
                    alpha: float = 1.0, rho: float = 1.0) -> float:
    """Equations 5, 6 and 7: a depthwise separable convolution with width multiplier ``alpha``
    and resolution multiplier ``rho`` costs
    D_K * D_K * aM * pD_F * pD_F + aM * aN * pD_F * pD_F Mult-Adds.

    Args:
        d_k: Kernel size D_K.
        m: Input channels M at alpha = 1.
        n: Output channels N at alpha = 1.
        d_f: Feature-map size D_F at rho = 1.
        alpha: Width multiplier, > 0. Default 1 (equation 5).
        rho: Resolution multiplier, > 0. Default 1 (equation 6 when only alpha is set).
    """
    if alpha <= 0 or rho <= 0:
        raise ValueError(f"alpha and rho must be > 0, got alpha={alpha!r}, rho={rho!r}")
    return depthwise_madds(d_k, alpha * m, rho * d_f) + pointwise_madds(alpha * m, alpha * n, rho * d_f)


def separable_cost_ratio(d_k: float, n: float) -> float:
    """Section 3.1: separable / standard convolution cost = 1/N + 1/D_K^2 (8 to 9x less for 3x3)."""
    return 1.0 / n + 1.0 / (d_k * d_k)


def conv_params(d_k: int, m: int, n: int) -> int:
    """Weights of a standard convolution: D_K * D_K * M * N."""
    return d_k * d_k * m * n


def separable_params(d_k: int, m: int, n: int, alpha: float = 1.0) -> int:
    """Weights of a depthwise separable convolution: D_K * D_K * aM + aM * aN (rho changes none)."""
    am, an = int(alpha * m), int(alpha * n)
    return d_k * d_k * am + am * an


def table3(d_k: int = 3, m: int = 512, n: int = 512, d_f: int = 14,
           alpha: float = 0.75, rho: float = 0.714) -> list[tuple[str, float, float]]:
    """Table 3: one internal MobileNet layer as the shrinking methods are applied cumulatively.

    Args:
        d_k, m, n, d_f: The layer; defaults are the paper's (3, 512, 512, 14).
        alpha: Width multiplier of row 3. Default 0.75.
        rho: Resolution multiplier of row 4. Default 0.714 (= 160/224).

    Returns:
        Rows ``(modification, million Mult-Adds, million parameters)``.
    """
    millions = 1e6
    return [
        ("Convolution", conv_madds(d_k, m, n, d_f) / millions, conv_params(d_k, m, n) / millions),
        ("Depthwise Separable Conv", separable_madds(d_k, m, n, d_f) / millions,
         separable_params(d_k, m, n) / millions),
        (f"alpha = {alpha}", separable_madds(d_k, m, n, d_f, alpha) / millions,
         separable_params(d_k, m, n, alpha) / millions),
        (f"rho = {rho}", separable_madds(d_k, m, n, d_f, alpha, rho) / millions,
         separable_params(d_k, m, n, alpha) / millions),
    ]
