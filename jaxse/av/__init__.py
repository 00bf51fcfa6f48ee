"""The audio-visual prior (AV-UDiffSE, AV-UDiffSE+; arXiv 2410.05301): a clean-speech NCSN++ prior conditioned on
visual features of the speaker's mouth through light cross-attention blocks, used by UDiffSE and UDiffSE+ unchanged.

* :mod:`jaxse.av.family`: the ``"av"`` model family (training on clean speech + its visual features);
* :mod:`jaxse.av.data`: visual feature files beside the audio tree, crops aligned with the audio crops;
* :mod:`jaxse.av.backend`: ``enhance.py --method av-udiffse|av-udiffse+ --visual DIR``;
* :mod:`jaxse.av.synthetic`: a clearly labelled *synthetic* visual stream made from clean speech, to check the
  mechanism where no audio-visual corpus is at hand.

The network itself is :class:`jaxse.diffusion.ncsnpp.NCSNpp` with ``cond_dim > 0``.
"""
