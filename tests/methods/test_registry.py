"""The method registry, the catalog read from the methods' sources, and the schema built from it list the same names."""

import pytest

from clgrid.catalog import methods as catalog
from clgrid.config.schema import load_schema
from clgrid.methods import METHODS, get_method
from tests.conftest import SCHEMA


def test_registry_matches_catalog_and_schema():
    schema = load_schema(str(SCHEMA))
    variant_methods = schema["properties"]["variants"]["additionalProperties"]["properties"]["method"]["enum"]
    assert sorted(variant_methods) == sorted(METHODS) == catalog.names()
    assert set(schema["properties"]["method_params"]["properties"]) == set(METHODS)


def test_each_class_reads_its_defaults_from_the_declaration_the_catalog_reads():
    for name, cls in METHODS.items():
        declared = {key: field["default"] for key, field in catalog.info(name).params.items()}
        assert cls.defaults == declared, name
        assert [type(v) for v in cls.defaults.values()] == [type(v) for v in declared.values()], name


def test_unknown_method_names_valid_choices():
    with pytest.raises(KeyError, match="unknown method 'ewx'; valid: agem, der, derpp, dml, ewc, ewc_online, gdumb, icarl, joint, "):
        get_method("ewx")
