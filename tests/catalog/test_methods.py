import subprocess
import sys
import textwrap

import pytest

from clgrid.catalog import methods
from clgrid.catalog.declared import DeclarationError


def test_the_catalog_reads_every_method_without_importing_torch():
    code = ("import sys; from clgrid.catalog import methods; print(','.join(methods.names())); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False"
    assert out[0].split(",") == sorted(out[0].split(",")) and {"naive", "ewc", "derpp", "zscl"} <= set(out[0].split(","))


def test_modules_without_a_registered_method_are_not_methods():
    modules = methods.clgrid_method_modules()
    assert "clgrid.methods.base" not in modules and not any(".parts" in m for m in modules)
    assert "clgrid.methods.der" in modules  # two methods, der and derpp, in one module
    assert methods.info("derpp").module == methods.info("der").module == "clgrid.methods.der"


def test_a_variant_inherits_its_base_class_declarations():
    der, derpp = methods.info("der"), methods.info("derpp")
    assert list(derpp.params) == [*der.params, "der_beta"]
    assert derpp.facts["buffer_params"] == ["buffer_size"]  # inherited from DER
    masked, kd = methods.info("masked_kd"), methods.info("kd_ema")
    assert set(kd.params) < set(masked.params) and "mask_ratio" in masked.params
    assert "freeze" not in kd.params  # the options every method takes are common_params, not each method's


def test_the_schema_block_keeps_each_default_as_declared():
    schema = {"properties": {"methods": {}, "variants": {"additionalProperties": {"properties": {}}}}}
    methods.insert_into_schema(schema)
    blocks = schema["properties"]["method_params"]["properties"]
    ewc_lambda = blocks["ewc"]["properties"]["ewc_lambda"]["default"]
    assert ewc_lambda == 100 and type(ewc_lambda) is int  # the run spec says 100, never 100.0
    assert blocks["naive"] == {"type": "object", "$ref": "#/$defs/common_method_params",
                               "unevaluatedProperties": False, "default": {}}
    assert schema["$defs"]["common_method_params"]["properties"]["lr_scale"]["default"] == 1.0
    assert schema["properties"]["variants"]["additionalProperties"]["properties"]["method"]["enum"] == methods.names()


def test_facts_the_planner_reads():
    assert methods.with_fact("needs_clip") == ["zscl"]
    assert methods.fact("joint", "trains_on_seen_tasks") is True
    assert methods.fact("lora", "feature_cache_unsupported") and not methods.fact("naive", "feature_cache_unsupported")
    assert methods.fact("no_such_method", "buffer_params", []) == []


def _external(tmp_path, monkeypatch, source: str, package: str):
    # One package name per test: the catalog caches what it parsed of a module, by name.
    pkg = tmp_path / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mine.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(methods, "external_entries", lambda: [("mine", f"{package}.mine", "Mine")])
    methods.catalog.cache_clear()


def test_an_unknown_fact_is_refused_with_the_method_named(tmp_path, monkeypatch):
    _external(tmp_path, monkeypatch, """
        from clgrid.methods import Method
        class Mine(Method):
            FACTS = {"needs_gpu": True}
    """, "labcat_facts")
    try:
        with pytest.raises(DeclarationError, match=r"method 'mine' \(labcat_facts.mine.Mine\) declares unknown FACTS"):
            methods.catalog()
    finally:
        methods.catalog.cache_clear()


def test_an_external_method_inherits_the_options_every_method_takes(tmp_path, monkeypatch):
    _external(tmp_path, monkeypatch, """
        from clgrid.methods.ewc import EWC
        class Mine(EWC):
            PARAMS = {"extra": {"type": "integer", "default": 3}}
    """, "labcat_inherits")
    try:
        mine = methods.info("mine")
        assert list(mine.params) == [*methods.info("ewc").params, "extra"]
        assert methods.schema_block("mine")["$ref"] == "#/$defs/common_method_params"
    finally:
        methods.catalog.cache_clear()
