"""Configs are data: typed, unknown keys rejected, one precedence, a stable hash."""

from __future__ import annotations

import pytest

from benchmark.errors import UserInputError
from benchmark.running.suites import expand_cells, parse_override, resolve_suite


def test_quick_suite_is_the_default_and_expands_to_three_families():
    suite = resolve_suite()
    cells = expand_cells(suite)
    assert [c.model for c in cells] == ["betavae", "vqvae", "vaegan"]
    assert {c.dataset for c in cells} == {"mnist-5k"}


def test_precedence_defaults_then_suite_then_set_then_selection(tmp_path):
    suite_file = tmp_path / "mine.yaml"
    suite_file.write_text(
        "datasets: [mnist-5k]\nmodels: [betavae, vaegan]\nseeds: [0]\n"
        "train: {epochs: 7}\nbetavae: {beta: 2.0}\n"
    )
    suite = resolve_suite(
        str(suite_file), ["betavae.beta=4", "train.batch_size=16"], models=["betavae"], seeds=[3, 4]
    )
    assert suite.name == "mine"
    assert suite.train.epochs == 7  # suite file over default
    assert suite.train.batch_size == 16  # --set over suite file / default
    assert suite.train.learning_rate == 1e-3  # default
    assert suite.betavae.beta == 4.0  # --set over suite file
    cells = expand_cells(suite)
    assert [(c.model, c.seed) for c in cells] == [("betavae", 3), ("betavae", 4)]  # CLI lists
    assert cells[0].params["beta"] == 4.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
        ("vqvae.num_embedings=8", "did you mean 'vqvae.num_embeddings'?"),
        ("trian.epochs=3", "unknown config key 'trian'; did you mean 'train'?"),
        ("train.epochs=zero", "invalid config value for 'train.epochs'"),
        ("vaegan.adversarial_loss_scale=2", "invalid config value for 'vaegan.adversarial_loss"),
        ("arch=huge", "invalid config value for 'arch'"),
    ],
)
def test_bad_keys_and_values_give_one_clear_line(override, message):
    with pytest.raises(UserInputError) as error:
        resolve_suite("quick", [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_names_suggest_the_valid_choice():
    with pytest.raises(UserInputError, match="unknown model 'vae-gan'; did you mean 'vaegan'"):
        resolve_suite(models=["vae-gan"])
    with pytest.raises(UserInputError, match="unknown dataset 'cifar'; did you mean 'cifar10'"):
        resolve_suite(datasets=["cifar"])
    with pytest.raises(UserInputError, match="unknown suite 'papers'; did you mean 'paper'"):
        resolve_suite("papers")


def test_override_values_are_parsed_as_yaml():
    assert parse_override("train.learning_rate=1e-4") == (["train", "learning_rate"], 1e-4)
    assert parse_override("vqvae.use_ema=true") == (["vqvae", "use_ema"], True)
    with pytest.raises(UserInputError, match="KEY=VALUE"):
        parse_override("train.epochs")


def test_config_hash_is_stable_and_sensitive():
    base = expand_cells(resolve_suite())[0]
    again = expand_cells(resolve_suite())[0]
    changed = expand_cells(resolve_suite(overrides=["betavae.beta=2"]))[0]
    relabelled = base.model_copy(update={"suite": "other"})
    assert base.config_hash() == again.config_hash()
    assert base.config_hash() != changed.config_hash()
    assert base.config_hash() == relabelled.config_hash()  # the suite name is a label only


def test_paper_suite_uses_pythae_networks_and_hub_datasets():
    suite = resolve_suite("paper")
    assert suite.arch == "pythae"
    assert suite.datasets == ["mnist", "fashion_mnist", "cifar10", "celeba"]
    assert len(suite.seeds) == 3


def test_evaluation_settings_and_the_label_column_do_not_make_another_training():
    """A finished cell whose config differs only in `eval` or `data.label_column` (read only by
    the classifier metrics) is scored again from its checkpoint, not retrained."""
    from benchmark.config import same_training
    from benchmark.running.suites import resolve_suite

    (cell,) = resolve_suite("quick", models=["betavae"]).cells()

    def changed(section: str, **values):
        part = getattr(cell, section).model_copy(update=values)
        return cell.model_copy(update={section: part})

    assert same_training(cell, changed("eval", classifier=False, fid=True))
    assert same_training(cell, changed("data", label_column="digit"))
    assert not same_training(cell, changed("data", max_train=100))
    assert not same_training(cell, changed("train", epochs=2))
