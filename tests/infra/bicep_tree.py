"""Read Bicep templates through tree-sitter-bicep: declarations, resource bodies, and a small
evaluator for the literal parts (strings, arrays, objects, variables, loop variables, ternaries).

Anything known only at deployment time (a parameter, a resource property, most function calls)
evaluates to an `Opaque` value carrying its source text. A ternary yields both branches, and a
resource or module declared with `for` yields one body per element, so a check sees every value
a template can produce.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

_PARSER = Parser(Language(tree_sitter_bicep.language()))
_ESCAPES = {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}
_MAX_ALTERNATIVES = 256


@dataclass(frozen=True)
class Opaque:
    """A value only the deployment knows (a parameter, a resource property, a function result)."""

    text: str


Env = dict[str, Any]


def text(node: Node) -> str:
    return (node.text or b"").decode()


def named(node: Node) -> list[Node]:
    return [child for child in node.children if child.is_named and child.type != "comment"]


def walk(node: Node, *, skip_comments: bool = True) -> Iterator[Node]:
    """Every node under `node` (itself included), depth first."""
    if skip_comments and node.type == "comment":
        return
    yield node
    for child in node.children:
        yield from walk(child, skip_comments=skip_comments)


def string_literal(node: Node) -> str | None:
    """The value of a string without interpolation, else None."""
    if node.type != "string":
        return None
    parts: list[str] = []
    for child in node.children:
        if child.type == "interpolation":
            return None
        if child.type == "string_content":
            parts.append(text(child))
        elif child.type == "escape_sequence":
            parts.append(_ESCAPES.get(text(child), text(child)))
    return "".join(parts)


def property_key(prop: Node) -> str | None:
    """The key of an object_property (identifier or literal string), else None."""
    key = prop.children[0] if prop.children else None
    if key is None:
        return None
    if key.type == "identifier":
        return text(key)
    return string_literal(key)


def properties(obj: Node) -> dict[str, Node]:
    """key -> value node of an object literal (nested resource declarations left out)."""
    result: dict[str, Node] = {}
    for prop in named(obj):
        if prop.type != "object_property":
            continue
        key = property_key(prop)
        values = named(prop)[1:]
        if key is not None and values and values[-1].type != "resource_declaration":
            result[key] = values[-1]
    return result


def get(obj: Node | None, *path: str) -> Node | None:
    """Follow object-literal keys, e.g. get(body, 'properties', 'roleDefinitionId')."""
    node = obj
    for key in path:
        if node is None or node.type != "object":
            return None
        node = properties(node).get(key)
    return node


def find_properties(node: Node, key: str) -> list[Node]:
    """Value nodes of every object property named `key` under `node`, at any depth (but not in
    nested resource declarations): the body of a resource may build its properties with union()."""
    found = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "comment" or (current.type == "resource_declaration" and not same(current, node)):
            continue
        if current.type == "object_property" and property_key(current) == key:
            found.append(named(current)[-1])
        stack.extend(reversed(current.children))
    return found


def same(a: Node, b: Node) -> bool:
    """The same node of the same tree (tree-sitter hands out a new wrapper on every access)."""
    return (a.start_byte, a.end_byte, a.type) == (b.start_byte, b.end_byte, b.type)


def member_chain(node: Node) -> list[str] | None:
    """['a', 'b', 'c'] for the expression a.b.c, else None."""
    if node.type == "identifier":
        return [text(node)]
    if node.type != "member_expression":
        return None
    obj, prop = node.child_by_field_name("object"), node.child_by_field_name("property")
    head = member_chain(obj) if obj is not None else None
    return head + [text(prop)] if head is not None and prop is not None else None


def call_name(node: Node) -> str | None:
    if node.type != "call_expression":
        return None
    function = node.child_by_field_name("function")
    return text(function) if function is not None else None


def call_arguments(node: Node) -> list[Node]:
    arguments = node.child_by_field_name("arguments")
    return named(arguments) if arguments is not None else []


@dataclass
class Declaration:
    kind: str  # param, var, resource, module, output
    name: str
    node: Node
    decorators: list[Node]

    @property
    def type_string(self) -> str | None:
        """The quoted type of a resource ('Microsoft.X/y@version') or the path of a module."""
        for child in named(self.node)[1:]:
            if child.type == "string":
                return string_literal(child)
        return None

    @property
    def value(self) -> Node:
        """The right-hand side: a var's or output's expression, a resource's or module's body, a
        param's default (the last named child; for a param without default, its type)."""
        return named(self.node)[-1]

    @property
    def has_default(self) -> bool:
        return self.kind == "param" and self.value.type != "type"

    @property
    def is_existing(self) -> bool:
        return any(child.type == "existing" for child in self.node.children)

    def decorator(self, name: str) -> Node | None:
        for decorator in self.decorators:
            call = named(decorator)[0] if named(decorator) else None
            if call is not None and call_name(call) == name:
                return call
        return None


_KINDS = {
    "parameter_declaration": "param",
    "variable_declaration": "var",
    "resource_declaration": "resource",
    "module_declaration": "module",
    "output_declaration": "output",
}


class Template:
    """One parsed .bicep file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.source = path.read_bytes()
        self.tree = _PARSER.parse(self.source)
        self.root = self.tree.root_node
        self.declarations: list[Declaration] = []
        pending: list[Node] = []
        for node in named(self.root):
            if node.type == "decorators":
                pending = named(node)
                continue
            kind = _KINDS.get(node.type)
            if kind is not None:
                self.declarations.append(Declaration(kind, text(named(node)[0]), node, pending))
            pending = []
        # Resources declared inside a parent resource's body.
        for node in walk(self.root):
            if node.type == "resource_declaration" and node.parent is not None and node.parent.type != "infrastructure":
                self.declarations.append(Declaration("resource", text(named(node)[0]), node, []))

    @property
    def relative(self) -> str:
        return str(self.path.relative_to(ROOT))

    @property
    def target_scope(self) -> str:
        for node in named(self.root):
            if node.type == "target_scope_assignment":
                return string_literal(named(node)[-1]) or ""
        return "resourceGroup"

    def of_kind(self, kind: str) -> dict[str, Declaration]:
        return {d.name: d for d in self.declarations if d.kind == kind}

    @property
    def params(self) -> dict[str, Declaration]:
        return self.of_kind("param")

    @property
    def variables(self) -> dict[str, Declaration]:
        return self.of_kind("var")

    @property
    def resources(self) -> dict[str, Declaration]:
        return self.of_kind("resource")

    @property
    def modules(self) -> dict[str, Declaration]:
        return self.of_kind("module")

    @property
    def outputs(self) -> dict[str, Declaration]:
        return self.of_kind("output")

    def resources_of_type(self, resource_type: str) -> list[Declaration]:
        """Resources whose type (without api-version) is `resource_type`, case-insensitively."""
        return [
            d for d in self.resources.values()
            if (d.type_string or "").split("@")[0].lower() == resource_type.lower()
        ]

    def module_template(self, module: Declaration) -> Template:
        return load(self.path.parent / (module.type_string or ""))

    # -- evaluation ---------------------------------------------------------------------------

    def instances(self, declaration: Declaration) -> list[tuple[Node, Env]]:
        """(body object, loop bindings) for every instance a resource or module declaration makes."""
        return self._expand(declaration.value, {})

    def _expand(self, node: Node, env: Env) -> list[tuple[Node, Env]]:
        if node.type == "if_statement":
            return self._expand(named(node)[-1], env)
        if node.type != "for_statement":
            return [(node, env)]
        children = named(node)
        head, iterable, body = children[0], children[1], children[-1]
        if head.type == "for_loop_parameters":
            variables = [text(c) for c in named(head)]
        else:
            variables = [text(head)]
        result = []
        for alternative in self.values(iterable, env):
            items = alternative if isinstance(alternative, list) else [Opaque(text(iterable))]
            for index, item in enumerate(items):
                bound = dict(env)
                bound[variables[0]] = item
                if len(variables) > 1:
                    bound[variables[1]] = index
                result.extend(self._expand(body, bound))
        return result

    def resolve(self, node: Node, env: Env | None = None) -> Node:
        """Follow an identifier naming a variable to the variable's expression."""
        env = env or {}
        seen = 0
        while node.type == "identifier" and text(node) not in env and text(node) in self.variables and seen < 50:
            node = self.variables[text(node)].value
            seen += 1
        return node

    def canonical(self, node: Node, env: Env | None = None) -> str:
        """Source text with variables substituted and whitespace removed: two expressions with the
        same canonical text compute the same value."""
        env = env or {}
        if node.type == "comment":
            return ""
        if node.type == "identifier" and not _is_object_key(node):
            resolved = self.resolve(node, env)
            if not same(resolved, node):
                return self.canonical(resolved, env)
        if node.child_count == 0:
            return "".join(text(node).split())
        return "".join(self.canonical(child, env) for child in node.children)

    def values(self, node: Node, env: Env | None = None) -> list[Any]:
        """Every value the expression can take (Opaque where the deployment decides)."""
        env = env or {}
        kind = node.type
        if kind == "parenthesized_expression":
            return self.values(named(node)[0], env)
        if kind == "string":
            return self._string_values(node, env)
        if kind == "number":
            return [int(text(node))]
        if kind == "boolean":
            return [text(node) == "true"]
        if kind == "null":
            return [None]
        if kind == "array":
            return [list(combo) for combo in _product([self.values(item, env) for item in named(node)])]
        if kind == "object":
            props = properties(node)
            combos = _product([self.values(value, env) for value in props.values()])
            return [dict(zip(props.keys(), combo, strict=True)) for combo in combos]
        if kind == "identifier":
            name = text(node)
            if name in env:
                return [env[name]]
            if name in self.variables:
                return self.values(self.variables[name].value, {})
            return [Opaque(name)]
        if kind == "member_expression":
            obj = node.child_by_field_name("object")
            prop = node.child_by_field_name("property")
            if obj is None or prop is None:
                return [Opaque(text(node))]
            result = []
            for value in self.values(obj, env):
                if isinstance(value, dict) and text(prop) in value:
                    result.append(value[text(prop)])
                else:
                    result.append(Opaque(text(node)))
            return result
        if kind == "subscript_expression":
            target, index = named(node)[0], named(node)[-1]
            result = []
            for value, position in itertools.product(self.values(target, env), self.values(index, env)):
                if isinstance(value, list) and isinstance(position, int) and -len(value) <= position < len(value):
                    result.append(value[position])
                else:
                    result.append(Opaque(text(node)))
            return result
        if kind == "ternary_expression":
            _, when_true, when_false = named(node)
            return self.values(when_true, env) + self.values(when_false, env)
        if kind == "call_expression" and call_name(node) == "union":
            result = []
            for combo in _product([self.values(arg, env) for arg in call_arguments(node)]):
                if all(isinstance(part, dict) for part in combo):
                    merged: dict[str, Any] = {}
                    for part in combo:
                        merged.update(part)
                    result.append(merged)
                else:
                    result.append(Opaque(text(node)))
            return result
        return [Opaque(text(node))]

    def _string_values(self, node: Node, env: Env) -> list[Any]:
        pieces: list[list[str]] = []
        for child in node.children:
            if child.type == "string_content":
                pieces.append([text(child)])
            elif child.type == "escape_sequence":
                pieces.append([_ESCAPES.get(text(child), text(child))])
            elif child.type == "interpolation":
                inner = named(child)[0]
                pieces.append([
                    str(value).lower() if isinstance(value, bool)
                    else str(value) if isinstance(value, str | int)
                    else "${" + text(inner) + "}"
                    for value in self.values(inner, env)
                ])
        return ["".join(combo) for combo in _product(pieces)]


def _is_object_key(node: Node) -> bool:
    parent = node.parent
    return parent is not None and parent.type == "object_property" and same(parent.children[0], node)


def _product(choices: list[list[Any]]) -> list[tuple[Any, ...]]:
    return list(itertools.islice(itertools.product(*choices), _MAX_ALTERNATIVES))


@cache
def load(path: Path) -> Template:
    return Template(path.resolve())


def template_paths() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def templates() -> list[Template]:
    return [load(path) for path in template_paths()]
