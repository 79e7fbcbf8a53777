"""The perturbed copies of one image that the metrics score, in a fixed order of variants.

All happen in the model's input space (the pre-processed image), pixels ranked by the map
(most salient first, ties in raster order):

* deletion step k of K: the first round(k·P/K) pixels of the P replaced by the *substrate*, so
  step 0 is the image itself. The default substrate is the blurred image; a constant one (a black
  image through the pre-processing, or zeros) is RISE's, but pixel-wise removal to a constant
  sprinkles salt noise no training image had, and on the demo a random map's removal then
  drops the probability as fast as Grad-CAM's (the README shows both);
* insertion step k: those pixels copied onto a blurred copy of the image (Gaussian, σ = 2.2 %
  of the larger side; Petsiuk et al.'s σ = 5 px at 224 px);
* the image multiplied by the map (Average Drop, Increase in Confidence);
* ROAD (Rong et al., ICML 2022, remove and debias): at each removal fraction the most (MoRF)
  or least (LeRF) salient pixels are removed and imputed from their neighbours, so that the
  removal's shape does not leak which pixels were removed. ROAD's noisy linear imputation solves
  a linear system over the neighbours; here OpenCV's Navier-Stokes inpainting imputes, and Gaussian
  noise (σ = ``noise`` × the channel's range) is added to the imputed pixels, as ROAD adds noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["VariantPlan", "Perturbations", "ROAD_FRACTIONS", "blurred"]

ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
BLUR_SIGMA = 0.022  # of the image's larger side
ROAD_NOISE = 0.01


@dataclass(frozen=True)
class VariantPlan:
    """Which variant index j holds which perturbation."""

    steps: int = 20
    road_fractions: tuple[float, ...] = ROAD_FRACTIONS

    @property
    def deletion(self) -> slice:
        return slice(0, self.steps + 1)

    @property
    def insertion(self) -> slice:
        return slice(self.steps + 1, 2 * self.steps + 2)

    @property
    def masked(self) -> int:
        return 2 * self.steps + 2

    @property
    def road_morf(self) -> slice:
        first = self.masked + 1
        return slice(first, first + len(self.road_fractions))

    @property
    def road_lerf(self) -> slice:
        first = self.road_morf.stop
        return slice(first, first + len(self.road_fractions))

    @property
    def count(self) -> int:
        return self.road_lerf.stop


def blurred(image: np.ndarray) -> np.ndarray:
    """The (H, W, C) image under a Gaussian blur of σ = BLUR_SIGMA × its larger side."""
    return cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA * max(image.shape[:2])).reshape(image.shape)


class Perturbations:
    """Variant j of one (H, W, C) model-input image under its (H, W) map; see :class:`VariantPlan`."""

    def __init__(self, image: np.ndarray, cam: np.ndarray, plan: VariantPlan, substrate: np.ndarray | None = None,
                 seed: int = 0, start: np.ndarray | None = None):
        """``substrate``: what deleted pixels become, ``start``: insertion's first image (both default to
        the image blurred)."""
        self.image, self.cam, self.plan = image, cam, plan
        self.order = np.argsort(-cam.ravel(), kind="stable")
        self._blurred = blurred(image) if substrate is None or start is None else None
        self._substrate = substrate if substrate is not None else self._blurred
        self._start = start if start is not None else self._blurred
        self._seed = seed

    def _top(self, fraction: float, least: bool = False) -> np.ndarray:
        """A boolean (H, W) mask of the round(fraction·P) most (or least) salient pixels."""
        count = int(round(fraction * self.order.size))
        chosen = self.order[::-1][:count] if least else self.order[:count]
        mask = np.zeros(self.order.size, bool)
        mask[chosen] = True
        return mask.reshape(self.cam.shape)

    def variant(self, j: int) -> np.ndarray:
        plan = self.plan
        if j < plan.insertion.start:
            return np.where(self._top(j / plan.steps)[..., None], self._substrate, self.image)
        if j < plan.masked:
            k = j - plan.insertion.start
            return np.where(self._top(k / plan.steps)[..., None], self.image, self._start)
        if j == plan.masked:
            return self.image * self.cam[..., None]
        least = j >= plan.road_lerf.start
        fraction = plan.road_fractions[j - (plan.road_lerf.start if least else plan.road_morf.start)]
        return self._imputed(self._top(fraction, least), np.random.default_rng([self._seed, j]))

    def _imputed(self, removed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        holes = removed.astype(np.uint8)
        out = np.empty_like(self.image)
        for c in range(self.image.shape[2]):
            channel = np.ascontiguousarray(self.image[..., c], dtype=np.float32)
            low, high = float(channel.min()), float(channel.max())
            filled = cv2.inpaint(channel, holes, 3, cv2.INPAINT_NS)
            noise = rng.normal(0.0, ROAD_NOISE * (high - low), channel.shape).astype(np.float32)
            out[..., c] = np.where(removed, np.clip(filled + noise, low, high), channel)
        return out
