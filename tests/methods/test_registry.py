"""The method registry and the config schema list the same names."""

import yaml

from clgrid.methods import METHODS, get_method
from tests.conftest import SCHEMA


def test_registry_matches_schema():
    schema = yaml.safe_load(SCHEMA.read_text())
    variant_methods = schema["properties"]["variants"]["additionalProperties"]["properties"]["method"]["enum"]
    assert sorted(variant_methods) == sorted(METHODS)
    assert set(schema["properties"]["method_params"]["properties"]) == set(METHODS)


def test_unknown_method_names_valid_choices():
    import pytest

    with pytest.raises(KeyError, match="unknown method 'ewx'; valid: agem, der, derpp, dml, ewc, ewc_online, gdumb, icarl, joint, "):
        get_method("ewx")
