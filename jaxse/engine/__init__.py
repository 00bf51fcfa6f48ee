"""The enhancement engine: any :class:`jaxse.core.backend.MethodBackend`, batched and compiled once per shape, over
waveforms, files and data sets. :mod:`jaxse.enhance` re-exports its public names (and is callable).

Modules, each importing only those above it in this list (and :mod:`jaxse.multihost`, which imports only the log):

* :mod:`jaxse.engine.log`: the CSV log (``LOG_NAME``, ``LOG_FIELDS``, ``read_log``).
* :mod:`jaxse.engine.batch`: :class:`~jaxse.engine.batch.Enhancer`, the compiled batch engine. Utterances of any
  length are batched together (zero-padded rows + lengths, frame masks), one compiled program per frame bucket
  (:func:`jaxse.parallel.bucket_sizes`) with a fixed number of rows; rows are spread over the local devices with
  ``jax.shard_map``. Signals longer than ``chunk_frames`` are cut into overlapping chunks of exactly
  ``chunk_frames`` frames and cross-faded back (:class:`jaxse.parallel.OverlapAdd`).
* :mod:`jaxse.engine.methods`: methods by name, through :mod:`jaxse.registry`: their settings classes, a
  checkpoint's tuned ``sampler_settings.json``, and ``load_backend`` (method + checkpoint -> backend).
* :mod:`jaxse.engine.outdir`: the output folder's lock (one run per folder or process share), the full-disk
  probe and the removal of temporary files a killed run left.
* :mod:`jaxse.engine.files`: ``enhance_files``, the data-set runner: mirrored output tree, resampling to the
  method's rate and back, atomic writes, resumable, a CSV log, bad files skipped, multi-process shares.
* :mod:`jaxse.engine.api`: ``enhance_audio``, one recording from Python, the engine kept between calls.

The method is a :class:`~jaxse.core.backend.MethodBackend`, the only part that differs between methods: the
spectral front-end and its inverse for padded rows (inside ``jit``), the per-file normalisation factor, the
per-row posterior ``(key, X_row, mask_row) -> S_row``, the frame quantum of the rows, an optional conditioning
input and its loader, the variables replicated over the devices and the cost figures for the logs. Each model
family brings its own backends and registers its methods in :mod:`jaxse.registry`; the engine knows none of them.

Design choices:

* **Keys.** Row noise comes from ``PRNGKey(0)`` folded with ``(seed, BLAKE2b(uid), chunk index)``; the CLI
  uses the file's path relative to the input as ``uid``. The posteriors take one key per utterance, so the
  per-row posterior is ``jax.vmap``-ed over the rows (or mapped one by one, ``row_by_row``), each row being a
  one-utterance batch with its own key. A result therefore does not depend on the other rows of its batch, the
  batch size or the device count (up to float rounding, ~1e-6; an accept/reject sampler can turn rounding
  into an occasional different decision, e.g. the RVAE's MHEM and MALAEM).
* **Normalisation.** ``NF`` is per *file* and computed on the host by the backend: its analysis of every row
  is divided by it before the posterior and the estimate multiplied back before the synthesis (e.g.
  ``max |compress(stft(x))|`` of the whole signal for the score-based priors, the waveform peak ``max |x|`` for
  the RVAE, so that the output has the input's scale). All chunks of a long file share it, so the chunks'
  levels agree and the cross-fades leave no seam.
* **Chunks.** A file with more than ``chunk_frames`` STFT frames is cut into chunks of
  ``(chunk_frames - 1)·hop`` samples (exactly ``chunk_frames`` frames, the training crop rule) starting
  every half chunk (the last chunk ends at the end of the file); each chunk is transformed on its own and
  the enhanced chunks are cross-faded in the waveform domain with sin²/cos² ramps over the overlap. Device
  memory depends on ``batch_size`` and ``chunk_frames`` only. The default 1024 frames are 8.2 s at a hop of
  128 samples at 16 kHz and 16.4 s at a hop of 256; a larger ``chunk_frames`` runs longer utterances whole.
* **Tail.** The backend's inverse STFT drops the padding frames, so the end keeps its level.
* **Silence.** A signal whose peak is at most ``silence_threshold`` (default 2^-15, one LSB of 16-bit
  audio: digital silence or dither) is returned as zeros without running the sampler. Anything louder is
  enhanced at its own scale (``NF``), and an all-zero spectrogram (a dummy row) gives ``Xn = 0``, never NaN.
"""
