"""The RVAE family: the RVAE speech model, its spectrogram, VEM/MHEM/MALAEM/LDEM posterior samplers, training objective and weight import."""
