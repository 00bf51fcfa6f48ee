"""The family and method registries: names, lazy loading, the family every checkpoint records, and the
one-line error when a checkpoint of one family is given to a method of another."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jaxse import registry
from jaxse.diffusion import udiffse
from jaxse.diffusion.models import ScoreModel
from jaxse.enhance import CheckpointError, config_class, load_backend, make_config
from jaxse.rvae import posterior as rvae_posterior
from jaxse.rvae.training import RVAEModel

PRIOR = registry.ASSETS / "prior"
RVAE = registry.ASSETS / "rvae"


def test_every_method_of_each_family_is_registered_once():
    assert registry.METHODS == (tuple(udiffse.METHODS) + tuple("rvae-" + m for m in rvae_posterior.METHODS)
                                + ("sgmse+", "supervised", "av-udiffse", "av-udiffse+"))
    for name in registry.METHODS:
        m = registry.method(name)
        assert m.family in registry.family_names()
        assert make_config(name).method == m.settings_method  # the settings name the method
        assert config_class(name) is type(make_config(name))
    assert registry.methods_of("rvae") == tuple("rvae-" + m for m in rvae_posterior.METHODS)
    assert registry.methods_of("av") == ("av-udiffse", "av-udiffse+")
    assert registry.method("av-udiffse+").conditioning and make_config("av-udiffse+").method == "udiffse+"
    assert registry.method_named_by("rvae", "ldem") == "rvae-ldem"
    with pytest.raises(registry.RegistryError):
        registry.method_named_by("rvae", "udiffse")


def test_commands_keep_the_names_users_type():
    import importlib

    for old, new in (("mix", "evaluation.mix"), ("evaluate", "evaluation.evaluate"), ("compare", "evaluation.compare"),
                     ("benchmark", "evaluation.benchmark"), ("convert", "diffusion.convert"),
                     ("rvae_convert", "rvae.convert")):
        assert importlib.import_module(f"jaxse.{old}").main is importlib.import_module(f"jaxse.{new}").main
    p = subprocess.run([sys.executable, "-m", "jaxse.compare", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "python -m jaxse.compare" in p.stdout


def test_unknown_names_are_one_line_errors():
    for call in (lambda: registry.family("nosuch"), lambda: registry.method("nosuch")):
        with pytest.raises(registry.RegistryError) as err:
            call()
        assert "\n" not in str(err.value) and "nosuch" in str(err.value)
    with pytest.raises(ValueError, match="unknown method"):
        make_config("nosuch")


def test_families_load_lazily():
    code = ("import sys, jaxse.registry, jaxse.enhance; "
            "print(any(m.startswith(('jaxse.rvae', 'jaxse.diffusion')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the engine and the registry import no family until one is asked for


def test_families_know_their_models():
    for name in registry.family_names():
        fam = registry.family(name)
        assert fam.name == name
    assert registry.family_of_model(ScoreModel()).name == "ncsnpp"
    assert registry.family_of_model(RVAEModel()).name == "rvae"
    assert registry.family("rvae").counts_epochs and not registry.family("rvae").uses_ema
    assert registry.family("ncsnpp").has_sampler and registry.family("ncsnpp").uses_ema
    for name in ("sgmse", "supervised"):  # trained on pairs; no prior samples
        assert registry.family(name).uses_ema and not registry.family(name).has_sampler


def test_model_descriptions_record_the_family_and_old_ones_still_load():
    d = ScoreModel().to_dict()
    assert d["family"] == "ncsnpp" and ScoreModel.from_dict(d) == ScoreModel()
    old = {k: v for k, v in d.items() if k != "family"}  # written before the family was recorded
    assert ScoreModel.from_dict(old) == ScoreModel()
    assert registry.family_name_of_metadata({"model": old}) == "ncsnpp"
    with pytest.raises(ValueError, match="model family 'rvae'"):
        ScoreModel.from_dict({**d, "family": "rvae"})
    assert RVAEModel().to_dict()["family"] == "rvae"


@pytest.mark.skipif(not (PRIOR.exists() and RVAE.exists()), reason="the shipped prior and RVAE are not installed")
def test_shipped_checkpoints_are_told_apart_and_a_wrong_family_is_one_line():
    assert registry.detect_family(PRIOR) == "ncsnpp"  # metadata of the original form: the default family
    assert registry.detect_family(RVAE) == "rvae"
    with pytest.raises(CheckpointError) as err:
        load_backend("udiffse+", RVAE)
    assert "'rvae' model family" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError) as err:
        load_backend("rvae-ldem", PRIOR)
    assert "'ncsnpp' model family" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(not PRIOR.exists(), reason="the shipped prior is not installed")
def test_load_checkpoint_refuses_another_family():
    from jaxse.training import load_checkpoint

    with pytest.raises(registry.RegistryError, match="not 'rvae'"):
        load_checkpoint(PRIOR, family="rvae")


def test_rvae_exports_record_their_family(tmp_path):
    import jax

    from jaxse.rvae.convert import CONFIG_FILE, save_rvae
    from jaxse.rvae.net import RVAEConfig, init_params

    params = init_params(jax.random.PRNGKey(0), RVAEConfig(x_dim=9, z_dim=2, dim_rnn_g_x=4, dim_rnn_g_z=4, dim_rnn_h=4))
    out = save_rvae(tmp_path / "r", params)
    assert json.loads((out / CONFIG_FILE).read_text())["family"] == "rvae"
    assert registry.detect_family(out) == "rvae"
