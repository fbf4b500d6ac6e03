"""
A CRD version's structural schema applied to custom objects, as the API server does on every write:

1. **Pruning**: fields the schema does not specify are dropped, except under
   ``x-kubernetes-preserve-unknown-fields: true``, and ``apiVersion``/``kind``/``metadata`` at the
   root and in ``x-kubernetes-embedded-resource`` objects. The dropped paths are returned, so that
   the caller can refuse them (``fieldValidation=Strict``) or warn about them (``Warn``).
2. **Defaulting**: ``default`` fills absent fields, and null ones that may not be null; nulls that
   may not be null and have no default are dropped. Defaults are applied top-down, so the fields
   of a defaulted object get their own defaults too.
3. **Validation**: the value validations of the OpenAPI v3 subset that CRDs use, through
   ``jsonschema`` (Draft 4 semantics: OpenAPI 3.0's boolean ``exclusiveMinimum``/``Maximum``),
   plus ``nullable``, ``x-kubernetes-int-or-string`` and the uniqueness of
   ``x-kubernetes-list-type: set|map`` lists. Problems are :class:`FieldError` s worded as
   kube-openapi words them (``spec.replicas in body should be greater than or equal to 0``).

Not implemented: CEL rules (``x-kubernetes-validations``), ``format`` checks, validation
ratcheting of unchanged invalid fields, and pruning or validating ``metadata`` (the store
checks names itself).

Each step works on a :class:`Part` of the object: a write through ``/status`` touches only the
status, and a write through the main endpoint of a resource with a status subresource touches
everything but the status (the store keeps the old one), as in the API server.
"""
import copy
import enum
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jsonschema
import jsonschema.validators

from operators.sandbox.errors import FieldError, FieldErrorType

Path = tuple[str | int, ...]

PRESERVE_UNKNOWN = 'x-kubernetes-preserve-unknown-fields'
EMBEDDED_RESOURCE = 'x-kubernetes-embedded-resource'
INT_OR_STRING = 'x-kubernetes-int-or-string'
LIST_TYPE = 'x-kubernetes-list-type'
LIST_MAP_KEYS = 'x-kubernetes-list-map-keys'
_ALWAYS_KEPT = frozenset({'apiVersion', 'kind', 'metadata'})  # at the root & in embedded resources


class Part(enum.Enum):
    WHOLE = 'whole'
    MAIN = 'main'  # everything but the status
    STATUS = 'status'


def render_path(path: Path) -> str:
    """A path as Kubernetes writes it: ``spec.steps[0].setWeight``."""
    text = ''
    for part in path:
        text += f'[{part}]' if isinstance(part, int) else f'.{part}' if text else part
    return text or '<root>'


class StructuralSchema:
    """One ``openAPIV3Schema``, ready to prune, default and validate objects (compiled once)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._validators: dict[Part, jsonschema.protocols.Validator] = {}

    # ----- Pruning & defaulting -----

    def prune(self, obj: dict[str, Any], part: Part = Part.WHOLE) -> list[str]:
        """Drop the fields that the schema does not specify, in place; return their paths."""
        unknown: list[str] = []
        for key, value, schema in self._top_level(obj, part):
            if schema is None:
                if not self.schema.get(PRESERVE_UNKNOWN):
                    del obj[key]
                    unknown.append(key)
            else:
                _prune(value, schema, (key,), unknown)
        return unknown

    def default(self, obj: dict[str, Any], part: Part = Part.WHOLE) -> None:
        """Apply the schema's defaults in place (see the module's docs)."""
        if part is not Part.STATUS:  # the status itself is never defaulted, only its fields
            _default_fields(obj, self.schema, skip=_ALWAYS_KEPT | ({'status'} if part is Part.MAIN else set()))
        for key, value, schema in self._top_level(obj, part):
            if schema is not None:
                _default(value, schema)

    def _top_level(self, obj: dict[str, Any], part: Part) -> Iterator[tuple[str, Any, Mapping[str, Any] | None]]:
        """The root's fields in the part, with their schemas (None: unknown); never the always-kept."""
        properties = self.schema.get('properties') or {}
        for key in list(obj):
            if key not in _ALWAYS_KEPT and _in_part(key, part):
                yield key, obj[key], properties.get(key)

    # ----- Validation -----

    def validate(self, obj: Mapping[str, Any], part: Part = Part.WHOLE) -> list[FieldError]:
        """The problems of the object's part, sorted by field."""
        if part is Part.STATUS:
            status_schema = (self.schema.get('properties') or {}).get('status')
            if status_schema is None or 'status' not in obj:
                return []
            errors = self._validator(Part.STATUS).iter_errors(obj['status'])
            prefix: Path = ('status',)
        else:
            errors = self._validator(part).iter_errors(obj)
            prefix = ()
        problems = [problem for error in errors for problem in _field_errors(error, prefix)]
        return sorted(problems, key=lambda problem: problem.field)

    def _validator(self, part: Part) -> jsonschema.protocols.Validator:
        if part not in self._validators:  # compiled on first use: most resources never see some parts
            self._validators[part] = _Validator(self._part_schema(part))
        return self._validators[part]

    def _part_schema(self, part: Part) -> Mapping[str, Any]:
        schema: Mapping[str, Any] = self.schema
        if part is Part.STATUS:
            schema = (schema.get('properties') or {})['status']
        elif part is Part.MAIN and 'status' in (schema.get('properties') or {}):
            schema = dict(schema, properties={key: value for key, value in schema['properties'].items()
                                              if key != 'status'})
            schema['required'] = [name for name in schema.get('required', []) if name != 'status']
        return schema


def _in_part(key: str, part: Part) -> bool:
    return part is Part.WHOLE or (key == 'status') == (part is Part.STATUS)


def _prune(value: Any, schema: Mapping[str, Any], path: Path, unknown: list[str]) -> None:
    if isinstance(value, dict):
        properties = schema.get('properties') or {}
        additional = schema.get('additionalProperties')
        keep_unknown = schema.get(PRESERVE_UNKNOWN) or additional is True
        embedded = schema.get(EMBEDDED_RESOURCE)
        for key in list(value):
            child = properties.get(key) or (additional if isinstance(additional, Mapping) else None)
            if child is not None:
                _prune(value[key], child, (*path, key), unknown)
            elif not keep_unknown and not (embedded and key in _ALWAYS_KEPT):
                del value[key]
                unknown.append(render_path((*path, key)))
    elif isinstance(value, list) and isinstance(schema.get('items'), Mapping):
        for index, item in enumerate(value):
            _prune(item, schema['items'], (*path, index), unknown)


def _default(value: Any, schema: Mapping[str, Any]) -> None:
    if isinstance(value, dict):
        _default_fields(value, schema, skip=set())
        properties = schema.get('properties') or {}
        additional = schema.get('additionalProperties')
        for key, item in value.items():
            child = properties.get(key) or (additional if isinstance(additional, Mapping) else None)
            if child is not None:
                _default(item, child)
    elif isinstance(value, list) and isinstance(schema.get('items'), Mapping):
        for item in value:
            _default(item, schema['items'])


def _default_fields(obj: dict[str, Any], schema: Mapping[str, Any], *, skip: set[str]) -> None:
    """One object's own fields: nulls that may not be null go, then absent fields get defaults."""
    properties = schema.get('properties') or {}
    additional = schema.get('additionalProperties')
    for key in [key for key, value in obj.items() if value is None and key not in skip]:
        child = properties.get(key) or (additional if isinstance(additional, Mapping) else None)
        if child is not None and not child.get('nullable'):
            del obj[key]
    for key, child in properties.items():
        if key not in obj and key not in skip and 'default' in child:
            obj[key] = copy.deepcopy(child['default'])


# ----- jsonschema, extended to OpenAPI v3 as Kubernetes reads it -----

def _is_integer(_: Any, instance: Any) -> bool:
    # Go decodes 1.0 into an integral number that passes as an integer; so does Kubernetes.
    return (isinstance(instance, int) and not isinstance(instance, bool)) or (
        isinstance(instance, float) and instance.is_integer())


def _type(validator: Any, types: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if instance is None and schema.get('nullable'):
        return
    expected = [types] if isinstance(types, str) else list(types)
    if not any(validator.is_type(instance, name) for name in expected):
        yield jsonschema.ValidationError(f'must be of type {",".join(expected)}')


def _enum(validator: Any, choices: Sequence[Any], instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if instance is None and schema.get('nullable'):
        return
    if not any(_same(instance, choice) for choice in choices):
        yield jsonschema.ValidationError('unsupported value')


def _same(left: Any, right: Any) -> bool:
    return bool(left == right) and isinstance(left, bool) == isinstance(right, bool)


def _required(validator: Any, names: Sequence[str], instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    # One error per missing field, located at the field itself (jsonschema locates it at the parent).
    if isinstance(instance, dict):
        for name in names:
            if name not in instance:
                yield jsonschema.ValidationError('required', path=(name,))


def _int_or_string(validator: Any, enabled: bool, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if enabled and not (isinstance(instance, str) or _is_integer(None, instance)):
        if not (instance is None and schema.get('nullable')):
            yield jsonschema.ValidationError('must be of type integer,string')


def _list_type(validator: Any, list_type: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if not isinstance(instance, list) or list_type not in ('set', 'map'):
        return
    keys = schema.get(LIST_MAP_KEYS) or []
    seen: list[Any] = []
    for index, item in enumerate(instance):
        identity = ({key: item.get(key) for key in keys} if list_type == 'map' and isinstance(item, dict)
                    else item)
        if identity in seen:
            yield jsonschema.ValidationError('duplicate', path=(index,), instance=identity)
        seen.append(identity)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    validators={'type': _type, 'enum': _enum, 'required': _required,
                INT_OR_STRING: _int_or_string, LIST_TYPE: _list_type},
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine('integer', _is_integer),
)


# ----- jsonschema's errors, worded as kube-openapi's -----

def _type_name(value: Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'number'
    if isinstance(value, str):
        return 'string'
    return 'array' if isinstance(value, list) else 'object'


def _shown(value: Any) -> Any:
    """The bad value in an ``Invalid value:`` message: scalars as they are, composites by type."""
    return _type_name(value) if isinstance(value, dict | list) else value


def _field_errors(error: jsonschema.ValidationError, prefix: Path) -> Iterator[FieldError]:
    path = render_path((*prefix, *error.absolute_path))
    keyword, expected, value = error.validator, error.validator_value, error.instance
    in_body = f'{path} in body'
    match keyword:
        case 'required':
            yield FieldError.required(path)
        case 'type' | 'x-kubernetes-int-or-string':
            types = 'integer,string' if keyword == INT_OR_STRING else (
                expected if isinstance(expected, str) else ','.join(expected))
            name = _type_name(value)
            yield FieldError(FieldErrorType.TYPE_INVALID, path, name,
                             f'{in_body} must be of type {types}: "{name}"')
        case 'enum':
            yield FieldError.not_supported(path, value, expected)
        case 'maxLength':
            unit = 'byte' if expected == 1 else 'bytes'
            yield FieldError(FieldErrorType.TOO_LONG, path, value, f'may not be more than {expected} {unit}')
        case 'maxItems' | 'maxProperties':
            yield FieldError(FieldErrorType.TOO_MANY, path, len(value), f'must have at most {expected} items')
        case 'x-kubernetes-list-type':
            yield FieldError(FieldErrorType.DUPLICATE, path, value)
        case 'oneOf' | 'anyOf':
            yield FieldError.invalid(path, _shown(value), _junction_detail(error, path))
            yield from _best_alternative(error, prefix)
        case _:
            yield FieldError.invalid(path, _shown(value), f'{in_body} {_VALUE_RULES[keyword](error)}')


def _bound(error: jsonschema.ValidationError, word: str, exclusive_key: str) -> str:
    exclusive = bool(error.schema.get(exclusive_key)) if isinstance(error.schema, Mapping) else False
    return f'should be {word} {"than" if exclusive else "than or equal to"} {error.validator_value}'


_VALUE_RULES = {
    'maximum': lambda e: _bound(e, 'less', 'exclusiveMaximum'),
    'minimum': lambda e: _bound(e, 'greater', 'exclusiveMinimum'),
    'multipleOf': lambda e: f'should be a multiple of {e.validator_value}',
    'minLength': lambda e: f'should be at least {e.validator_value} chars long',
    'pattern': lambda e: f"should match '{e.validator_value}'",
    'minItems': lambda e: f'should have at least {e.validator_value} items',
    'minProperties': lambda e: f'should have at least {e.validator_value} properties',
    'uniqueItems': lambda e: "shouldn't contain duplicates",
    'not': lambda e: 'must not validate the schema (not)',
}


def _junction_detail(error: jsonschema.ValidationError, path: str) -> str:
    if error.validator == 'anyOf':
        return f'"{path}" must validate at least one schema (anyOf)'
    alternatives = error.validator_value
    failed = {suberror.relative_schema_path[0] for suberror in error.context or ()}
    valid = len(alternatives) - len(failed)
    found = 'Found none valid' if valid == 0 else f'Found {valid} valid alternatives'
    return f'"{path}" must validate one and only one schema (oneOf). {found}'


def _best_alternative(error: jsonschema.ValidationError, prefix: Path) -> Iterator[FieldError]:
    """When no alternative holds, what the closest one lacks (as kube-openapi reports it)."""
    by_alternative: dict[Any, list[jsonschema.ValidationError]] = {}
    for suberror in error.context or ():
        by_alternative.setdefault(suberror.relative_schema_path[0], []).append(suberror)
    if len(by_alternative) < len(error.validator_value):
        return  # some alternative holds: the problem is that several do (oneOf)
    best = min(by_alternative.values(), key=len)
    for suberror in best:
        yield from _field_errors(suberror, prefix)
