"""The ``"ncsnpp"`` model family: the clean-speech diffusion prior (NCSN++/NCSN++M score network on the
compressed complex STFT, OUVE SDE), trained by denoising score matching with an EMA of the parameters, with
prior samples during training (:class:`jaxse.diffusion.family.ScorePriorFamily`)."""

from __future__ import annotations

from jaxse.diffusion.convert import ReferenceLayout
from jaxse.diffusion.family import ScorePriorFamily
from jaxse.diffusion.models import ScoreModel
from jaxse.diffusion.ncsnpp import NCSNppConfig
from jaxse.prior.sampler import PriorSampler


class PriorFamily(ScorePriorFamily):
    name = "ncsnpp"
    has_sampler = True
    model_class = ScoreModel

    def reference_model(self, layout: ReferenceLayout):
        """The 65M UDiffSE prior (output divided by t) or NCSN++M (noise parameterisation): a time embedding,
        2 input channels, no cross-attention."""
        if not (layout.timed and layout.in_channels == 2 and not layout.xattn_modules):
            return None
        if layout.num_modules == layout.BIG_MODULES:
            return ScoreModel(net=NCSNppConfig(**layout.big()), parameterization="udiffse")
        if layout.num_modules == layout.SMALL_MODULES:
            return ScoreModel(net=NCSNppConfig(**layout.small(), output_scaling="none"), parameterization="noise")
        return None

    def describe_model(self, model) -> str:
        return f"{model.parameterization} prior"

    def prior_sampler(self, num_steps: int | None = None) -> PriorSampler:
        """The prior's PC sampler (:class:`jaxse.prior.sampler.PriorSampler`, the UDiffSE recipe's settings)."""
        sampler = PriorSampler()
        return sampler if num_steps is None else sampler.replace(num_steps=int(num_steps))


FAMILY = PriorFamily()
