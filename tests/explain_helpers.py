"""What the explanation tests share: the tiny model, random inputs, a model whose right answer is known."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dermretr.models.backbones import create
from dermretr.models.retriever import Retriever

SIZE = 64
TEXT = "blue-whitish veil and irregular streaks"


def rendered(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def not_blank(fig: Figure) -> bool:
    return rendered(fig).std() > 5


def tiny_retriever() -> Retriever:
    torch.manual_seed(0)
    return Retriever(create("dermretr-tiny", device="cpu", image_size=SIZE), kind="full", n_masks=2)


def random_images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(3, SIZE, SIZE, generator=g) for _ in range(4)]


class RegionRetriever(Retriever):
    """A retriever that only looks at the top-left quadrant of every image: the right answer is known."""

    def __init__(self, backbone):
        super().__init__(backbone, kind="full", n_masks=2)
        region = torch.zeros(1, 1, SIZE, SIZE)
        region[..., : SIZE // 2, : SIZE // 2] = 1
        self.register_buffer("region", region)

    def target_features(self, images):
        return super().target_features(images * self.region)

    def query_features(self, images, texts):
        return super().query_features(None if images is None else images * self.region, texts)


def region_retriever() -> RegionRetriever:
    torch.manual_seed(0)
    return RegionRetriever(create("dermretr-tiny", device="cpu", image_size=SIZE))
