"""The Snakemake config's JSON schema and config/README.md's key tables are generated from the models:
the files in the repository are what the models generate, the shipped configs pass the schema, and
the schema's facts are the models' (a default changed in a model changes the schema)."""

from pathlib import Path

import jsonschema
import pytest
import yaml

from egrpo import schema
from egrpo.config import deep_merge

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [["config/config.yaml"], ["config/config.yaml", "config/world_study.yaml"], ["config/flux.yaml"],
           [".test/config.yaml"]]


def test_generated_files_are_not_stale():
    """Fails when a model changed and `egrpo schema` was not rerun (its message says so)."""
    assert schema.stale(ROOT) == [], "run `egrpo schema` and commit the files it writes"


@pytest.mark.parametrize("files", CONFIGS, ids=["+".join(Path(f).stem for f in c) for c in CONFIGS])
def test_every_shipped_config_passes_the_schema(files):
    config = {}
    for f in files:
        config = deep_merge(config, yaml.safe_load((ROOT / f).read_text()))
    jsonschema.validate(config, schema.config_schema())


def test_the_schema_states_the_models_facts():
    """Types, ranges, defaults and the per-method keys come from the models: the world's critic steps,
    E-GRPO's active-step presets in training and in its ablations, a method's own keys."""
    from egrpo.world.spec import WorldSpec

    s = schema.config_schema()
    world = s["properties"]["world"]["anyOf"][0]["properties"]
    assert world["critic_steps"]["default"] == WorldSpec().critic_steps and world["critic_steps"]["minimum"] == 1
    egrpo = s["$defs"]["EGRPOMethodOverlay"]["properties"]["active"]["anyOf"][0]["enum"]
    assert egrpo == ["first4", "first8", "second8", "all"]
    ablated = s["properties"]["ablations"]["properties"]["methods"]["properties"]
    assert ablated["egrpo"]["properties"]["active"]["items"]["anyOf"][0]["enum"] == egrpo
    assert "window_size" in ablated["mixgrpo"]["properties"] and "window_size" not in ablated["egrpo"]["properties"]
    training = s["properties"]["training"]["properties"]
    assert "path" not in s["$defs"]["ModelConfigOverlay"]["properties"]  # written once, under inputs
    assert training["methods"]["properties"]["egrpo"]["properties"]["method"] == {"$ref": "#/$defs/EGRPOMethodOverlay"}


def test_a_hand_edit_is_stale(tmp_path):
    """The staleness check sees a schema edited by hand, and a README table out of date."""
    for rel in (schema.SCHEMA, schema.README):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    assert schema.stale(tmp_path) == []
    text = (tmp_path / schema.SCHEMA).read_text()
    (tmp_path / schema.SCHEMA).write_text(text.replace("critic_steps: {default: 300", "critic_steps: {default: 200"))
    readme = (tmp_path / schema.README).read_text()
    (tmp_path / schema.README).write_text(readme.replace("| `world.critic_steps` |", "| `world.criticsteps` |"))
    assert schema.stale(tmp_path) == [tmp_path / schema.SCHEMA, tmp_path / schema.README]
    schema.write(tmp_path)
    assert schema.stale(tmp_path) == [] and (tmp_path / schema.SCHEMA).read_text() == text


def test_the_readme_tables_name_every_key():
    text = (ROOT / "config/README.md").read_text()
    for key in ("`world.critic_steps`", "`eval.sampler.samples`", "`ablations.methods`", "`gpus.per_node`",
                "`train.micro_batch`", "`model.max_sequence_length`", "| `mixgrpo` |"):
        assert key in text, key
