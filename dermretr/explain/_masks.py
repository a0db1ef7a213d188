"""The model's own spatial masks: which regions each of the M masks pooled, query and target side.

:func:`mask_arrays` gives the masks as numbers (patch grid and image
resolution); :func:`mask_maps` draws them over both images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .._errors import DermretrError
from ._inputs import as_texts, explaining, to_display, to_pixels

__all__ = ["mask_arrays", "mask_maps"]


def _grid_to_image(maps: torch.Tensor, grid: tuple[int, int], size: int) -> np.ndarray:
    """``[M, N]`` patch weights -> ``[M, size, size]`` (bilinear)."""
    m = maps.detach().float().reshape(maps.shape[0], 1, grid[0], grid[1])
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)[:, 0].cpu().numpy()


def mask_arrays(retriever, query_image: Any, text: str, target_image: Any) -> dict[str, np.ndarray]:
    """The M spatial attention masks of the query side and of the target side, at image resolution.

    Returns
    -------
    dict
        ``"query"`` and ``"target"``: ``[M, H, W]`` float32 (the patch weights
        upsampled; on the patch grid each mask sums to 1); ``"query_grid"``,
        ``"target_grid"``: ``[M, gh, gw]``; ``"query_image"``,
        ``"target_image"``: ``[H, W, 3]`` uint8.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=3)
    >>> m = mask_arrays(r, torch.zeros(3, 64, 64), "streaks", torch.randn(3, 64, 64))
    >>> m["query"].shape, m["target_grid"].shape, bool(abs(m["target_grid"][0].sum() - 1) < 1e-5)
    ((3, 64, 64), (3, 4, 4), True)
    """
    if not retriever.uses_local:
        raise DermretrError(f"a {retriever.kind!r} retriever has no spatial masks; mask maps need kind='full'")
    bb = retriever.backbone
    q_px = to_pixels(retriever, query_image, "query image")[None]
    t_px = to_pixels(retriever, target_image, "target image")[None]
    with explaining(retriever), torch.no_grad():
        q = retriever.query_features(q_px, as_texts([text]))
        t = retriever.target_features(t_px)
    size = int(bb.image_size)
    gh, gw = bb.grid
    return {
        "query": _grid_to_image(q["attn"][0], bb.grid, size).astype(np.float32),
        "target": _grid_to_image(t["attn"][0], bb.grid, size).astype(np.float32),
        "query_grid": q["attn"][0].float().reshape(-1, gh, gw).cpu().numpy(),
        "target_grid": t["attn"][0].float().reshape(-1, gh, gw).cpu().numpy(),
        "query_image": to_display(retriever, q_px[0]),
        "target_image": to_display(retriever, t_px[0]),
    }


def mask_maps(retriever, query_image: Any, text: str, target_image: Any, alpha: float = 0.55) -> Figure:
    """Figure: which regions each of the M masks pooled, query (top row) and target (bottom row).

    Columns: the image, one overlay per mask (normalised to its own peak), and
    the dominant mask of every pixel.  See :func:`mask_arrays` for the numbers.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> fig = mask_maps(r, torch.zeros(3, 64, 64), "streaks", torch.randn(3, 64, 64))
    >>> len(fig.axes)
    8
    """
    from matplotlib import colormaps

    maps = mask_arrays(retriever, query_image, text, target_image)
    m = maps["query"].shape[0]
    fig = Figure(figsize=(1.9 * (m + 2), 4.3), layout="constrained")
    axes = fig.subplots(2, m + 2, squeeze=False)
    colors = colormaps["tab10"]
    for row, side in enumerate(("query", "target")):
        img, masks = maps[f"{side}_image"], maps[side]
        axes[row, 0].imshow(img)
        axes[row, 0].set_title("query (reference)" if side == "query" else "target", fontsize=8)
        for j in range(m):
            ax = axes[row, j + 1]
            ax.imshow(img)
            peak = float(masks[j].max()) or 1.0
            ax.imshow(masks[j] / peak, cmap="magma", alpha=alpha, vmin=0, vmax=1)
            ax.set_title(f"mask {j + 1} (peak {maps[f'{side}_grid'][j].max():.2f})", fontsize=7)
        dominant = masks.argmax(0)
        seg = colors(dominant % 10)[..., :3]
        ax = axes[row, m + 1]
        ax.imshow((1 - alpha) * img / 255.0 + alpha * seg)
        ax.set_title("dominant mask", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"spatial masks - text: {text!r}" if text else "spatial masks (no text)", fontsize=9)
    return fig
