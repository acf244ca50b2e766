"""The schema, loaded with what the code declares filled in, and validation that fills its defaults."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

from clgrid.catalog.archs import COMMON_OPTIONS, archs
from clgrid.config.messages import from_schema_error


@lru_cache(maxsize=8)
def load_schema(schema_path: str) -> dict[str, Any]:
    """The schema file with what the code declares filled in (so it is written once): each arch's options, and
    ``method_params`` built from each method's ``PARAMS`` (``clgrid.catalog.methods``, torch-free)."""
    import yaml

    from clgrid.catalog import methods

    schema = yaml.safe_load(Path(schema_path).read_text())
    add_arch_options(schema)
    return methods.insert_into_schema(schema)


def add_arch_options(schema: dict[str, Any]) -> None:
    """Each arch of ``clgrid.catalog.archs``, in the backbone schema: the ``arch`` enum, and a rule per arch that
    fills its declared defaults and refuses another family's options. An option the schema does not describe
    (a lab's own family) is accepted with any value."""
    backbone = schema["$defs"]["backbone"]
    declared = archs()
    backbone["properties"]["arch"]["enum"] = list(declared)
    for name, arch in declared.items():
        for option in arch.defaults:
            backbone["properties"].setdefault(option, {"description": f"{name}: an option of {arch.module}"})
    backbone["allOf"] = [*backbone.get("allOf", []), *(
        {"if": {"properties": {"arch": {"const": name}}},
         "then": {"propertyNames": {"enum": ["arch", *arch.defaults, *COMMON_OPTIONS]},
                  "properties": {option: {"default": default} for option, default in arch.defaults.items()}}}
        for name, arch in declared.items())]


@lru_cache(maxsize=1)
def _default_filling_validator():
    # The recipe of the jsonschema FAQ that snakemake.utils.validate uses: each `properties` keyword first fills
    # the defaults of absent keys. Unlike snakemake's copy, defaults are copied (the schema is cached here, and a
    # filled-in {} must not be shared between configs) and only objects are filled (a list where an object
    # belongs is then reported, not a crash).
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]
    # JSON Schema counts 32.0 as an integer; the jobs do not (nn.Linear(8, 32.0) and a dataset's image_size: 224.0
    # fail there), so an integer field takes whole numbers written without a fraction part.
    types = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults}, type_checker=types)


def validate(config: dict[str, Any], schema_path: str | Path) -> None:
    """Validate ``config`` against the schema in place, filling defaults; raise the best error as ConfigError."""
    from jsonschema.exceptions import best_match

    schema = load_schema(str(schema_path))
    errors = list(_default_filling_validator()(schema).iter_errors(config))
    if errors:
        raise from_schema_error(best_match(errors), schema, config)
