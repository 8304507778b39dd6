"""The deployment files, checked without Azure: every template parses, and the parsed templates
(not their raw text) are checked against what the app registers, what least privilege allows and
what azd and the postdeploy hook expect. The Bicep compiler cannot run here; these checks stand
in for the parts of it (and of review) that matter most."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tree_sitter import Node

from tests.infra.bicep_tree import (
    INFRA,
    ROOT,
    Declaration,
    Opaque,
    Template,
    call_arguments,
    call_name,
    find_properties,
    get,
    load,
    member_chain,
    named,
    properties,
    string_literal,
    template_paths,
    templates,
    text,
    walk,
)

MAIN = INFRA / "main.bicep"
SUBSCRIPTIONS = INFRA / "subscriptions.bicep"
PARAMETERS = INFRA / "main.parameters.json"
AZURE_YAML = ROOT / "azure.yaml"

PRE, POST = "Microsoft.Maintenance.PreMaintenanceEvent", "Microsoft.Maintenance.PostMaintenanceEvent"
FUNCTION_FOR_EVENT = {PRE: "pre_maintenance", POST: "post_maintenance"}

BUILT_IN_ROLES = {
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
    "9980e02c-c2be-4d73-94e8-173b1dc7cf3c": "Virtual Machine Contributor",
    "4a9ae827-6dc8-4573-8ac7-8239d42aa03f": "Tag Contributor",
    "7efff54f-a5b4-42b5-a1c5-5411624893ce": "Disk Snapshot Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
}
CANCEL_ROLE_ACTIONS = {
    "Microsoft.Maintenance/applyUpdates/read",
    "Microsoft.Maintenance/applyUpdates/write",
    "Microsoft.Maintenance/maintenanceConfigurations/read",
}
# The custom role for in-guest actions: managed Run Commands on VMs and Arc-enabled servers, and
# reading Arc machines (DOMAIN.md section 11). Nothing that changes or deletes a machine itself.
GUEST_ACTIONS_ROLE_ACTIONS = {
    "Microsoft.Compute/virtualMachines/runCommands/read",
    "Microsoft.Compute/virtualMachines/runCommands/write",
    "Microsoft.Compute/virtualMachines/runCommands/delete",
    "Microsoft.HybridCompute/machines/read",
    "Microsoft.HybridCompute/machines/runCommands/read",
    "Microsoft.HybridCompute/machines/runCommands/write",
    "Microsoft.HybridCompute/machines/runCommands/delete",
}
CANCEL_ROLE = INFRA / "app/maintenance-cancel-role.bicep"
GUEST_ACTIONS_ROLE = INFRA / "app/guest-actions-role.bicep"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)

# Words that mean a key, a connection string or a secret travels through a template. Compared
# with identifiers, property names and string contents, lower-cased, without '_' and '-'.
FORBIDDEN = ("listkeys", "listconnectionstrings", "listsecrets", "secret", "accountkey", "connectionstring")
# The one exception: the Application Insights connection string, as the app setting of that name.
# It carries an instrumentation key, which no longer authorizes anything once local auth is
# disabled on the component (checked below); telemetry is sent with the identity's token.
APP_INSIGHTS_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
APP_INSIGHTS_TYPE = "Microsoft.Insights/components"

# Settings the platform reads rather than the app (handlers/core/settings.py reads the rest).
PLATFORM_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                     "AzureWebJobsStorage__credential", "AzureWebJobsStorage__blobServiceUri"}
FLEX_REJECTED_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                          "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "AzureWebJobsStorage"}


def single(values: list[Any], what: str) -> Any:
    assert len(values) == 1, f"{what}: expected one value, the template can produce {values}"
    return values[0]


def literal(template: Template, node: Node | None, what: str) -> Any:
    assert node is not None, f"{template.relative}: {what} is missing"
    value = single(template.values(node), f"{template.relative}: {what}")
    assert not isinstance(value, Opaque), f"{template.relative}: {what} is not a literal ({value.text})"
    return value


def registered_functions() -> dict[str, Any]:
    import function_app
    from emulator.functions_host import index_functions

    return index_functions(function_app.app)


def event_subscription_instances() -> list[tuple[Template, Node, dict[str, Any]]]:
    found = []
    for template in templates():
        for declaration in template.resources_of_type("Microsoft.EventGrid/systemTopics/eventSubscriptions"):
            for body, env in template.instances(declaration):
                found.append((template, body, env))
    return found


def role_definitions() -> list[tuple[Template, Declaration]]:
    return [
        (template, declaration)
        for template in templates()
        for declaration in template.resources_of_type("Microsoft.Authorization/roleDefinitions")
    ]


def role_definition(path: Path) -> tuple[Template, Declaration]:
    template = load(path)
    definitions = template.resources_of_type("Microsoft.Authorization/roleDefinitions")
    assert len(definitions) == 1, f"{template.relative}: {len(definitions)} role definitions"
    return template, definitions[0]


def role_assignments() -> list[tuple[Template, Declaration, Node, dict[str, Any]]]:
    found = []
    for template in templates():
        for declaration in template.resources_of_type("Microsoft.Authorization/roleAssignments"):
            for body, env in template.instances(declaration):
                found.append((template, declaration, body, env))
    return found


# ------------------------------------------------------------------------------------------------
# Syntax


def test_the_expected_templates_exist() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in template_paths()}
    assert {"main.bicep", "subscriptions.bicep", "app/event-subscriptions.bicep"} <= names
    assert len(names) >= 10, names


@pytest.mark.parametrize("path", template_paths(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_template_parses_without_errors(path: Path) -> None:
    template = load(path)
    assert template.root.type == "infrastructure"
    broken = [
        f"line {node.start_point[0] + 1}: {'missing' if node.is_missing else 'unexpected'} {text(node)[:60]!r}"
        for node in walk(template.root)
        if node.is_error or node.is_missing or node.type == "ERROR"
    ]
    assert not broken, f"{template.relative} does not parse:\n" + "\n".join(broken)
    assert template.declarations, f"{template.relative} declares nothing"


def test_modules_exist_and_get_the_parameters_they_declare() -> None:
    problems = []
    for template in templates():
        for module in template.modules.values():
            path = template.path.parent / (module.type_string or "")
            if not path.is_file():
                problems.append(f"{template.relative}: module {module.name}: no file {module.type_string}")
                continue
            target = load(path)
            for body, _ in template.instances(module):
                params = get(body, "params")
                given = set(properties(params)) if params is not None else set()
                declared = set(target.params)
                required = {name for name, param in target.params.items() if not param.has_default}
                where = f"{template.relative}: module {module.name}"
                if given - declared:
                    problems.append(f"{where} passes undeclared {sorted(given - declared)}")
                if required - given:
                    problems.append(f"{where} misses required {sorted(required - given)}")
                scope = get(body, "scope")
                expected = {"subscription": "subscription", "resourceGroup": "resourceGroup"}[target.target_scope]
                if scope is not None and call_name(scope) != expected:
                    problems.append(f"{where} targets {target.target_scope} but its scope is {text(scope)}")
                if scope is None and target.target_scope != template.target_scope:
                    problems.append(f"{where} needs a {target.target_scope} scope")
    assert not problems, "\n".join(problems)


def test_module_outputs_used_are_declared() -> None:
    problems = []
    for template in templates():
        for node in walk(template.root):
            # <module>.outputs.<name>
            if node.type != "member_expression":
                continue
            inner = node.child_by_field_name("object")
            if inner is None or inner.type != "member_expression":
                continue
            symbol, outputs = inner.child_by_field_name("object"), inner.child_by_field_name("property")
            if symbol is None or outputs is None or text(outputs) != "outputs" or text(symbol) not in template.modules:
                continue
            module = template.modules[text(symbol)]
            name = text(node.child_by_field_name("property") or node)
            if name not in template.module_template(module).outputs:
                problems.append(f"{template.relative}: {text(node)} is not an output of {module.type_string}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# (a) + (b): event subscriptions


def test_event_subscription_endpoints_are_registered_event_grid_functions() -> None:
    functions = registered_functions()
    instances = event_subscription_instances()
    assert instances, "no Microsoft.EventGrid/systemTopics/eventSubscriptions resource in infra/"
    targeted = set()
    for template, body, env in instances:
        endpoints = [
            value
            for node in find_properties(body, "resourceId")
            for value in template.values(node, env)
            if isinstance(value, str) and "/functions/" in value
        ]
        endpoint = single(endpoints, f"{template.relative}: function endpoint of a subscription")
        name = endpoint.rsplit("/functions/", 1)[1]
        assert name in functions, f"{template.relative}: endpoint function {name!r} is not one of {sorted(functions)}"
        binding_types = {binding.type for binding in functions[name].get_bindings()}
        assert "eventGridTrigger" in binding_types, f"{name} is not an Event Grid-triggered function"
        targeted.add(name)
    assert targeted == set(FUNCTION_FOR_EVENT.values())


def test_each_subscription_filters_exactly_one_maintenance_event_type() -> None:
    seen = []
    for template, body, env in event_subscription_instances():
        filters = find_properties(body, "includedEventTypes")
        types = single([v for node in filters for v in template.values(node, env)], f"{template.relative}: filter")
        assert isinstance(types, list) and len(types) == 1, f"{template.relative}: filter {types} is not one type"
        event_type = types[0]
        assert event_type in FUNCTION_FOR_EVENT, f"{template.relative}: unexpected event type {event_type!r}"
        endpoint = [
            value for node in find_properties(body, "resourceId") for value in template.values(node, env)
            if isinstance(value, str) and "/functions/" in value
        ]
        assert [e.rsplit("/", 1)[1] for e in endpoint] == [FUNCTION_FOR_EVENT[event_type]], (
            f"{template.relative}: {event_type} goes to {endpoint}"
        )
        seen.append(event_type)
    assert sorted(seen) == sorted(FUNCTION_FOR_EVENT), f"subscriptions per event type: {seen}"


def test_subscriptions_deliver_one_event_at_a_time_and_dead_letter_with_the_topic_identity() -> None:
    for template, body, env in event_subscription_instances():
        # One alternative per delivery mode (the union's ternary).
        for props in template.values(get(body, "properties") or body, env):
            assert isinstance(props, dict), f"{template.relative}: properties are not an object literal"
            where = f"{template.relative}: {props.get('filter')}"
            assert props["eventDeliverySchema"] == "EventGridSchema", where
            dead_letter = props["deadLetterWithResourceIdentity"]
            assert dead_letter["identity"] == {"type": "SystemAssigned"}, where
            assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob", where
            assert "deadLetterDestination" not in props, f"{where}: dead-lettering must use the topic's identity"
            retry = props["retryPolicy"]
            assert set(retry) == {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"}, where
    # Both delivery modes, from the ternary in the body.
    template = load(INFRA / "app/event-subscriptions.bicep")
    declaration = template.resources_of_type("Microsoft.EventGrid/systemTopics/eventSubscriptions")[0]
    body, env = template.instances(declaration)[0]
    modes = template.values(get(body, "properties") or body, env)
    destinations = [m["destination"] for m in modes if "destination" in m]
    queued = [m["deliveryWithResourceIdentity"] for m in modes if "deliveryWithResourceIdentity" in m]
    assert destinations and all(
        d["endpointType"] == "AzureFunction"
        and d["properties"]["maxEventsPerBatch"] == 1
        and d["properties"]["preferredBatchSizeInKilobytes"] == 64
        for d in destinations
    ), destinations
    assert queued and all(
        q["identity"] == {"type": "SystemAssigned"} and q["destination"]["endpointType"] == "StorageQueue"
        for q in queued
    ), queued
    assert not any("destination" in m and "deliveryWithResourceIdentity" in m for m in modes)


def test_retry_windows_fit_the_maintenance_timeline() -> None:
    main = load(MAIN)

    def default(template: Template, name: str) -> Any:
        return literal(template, template.params[name].value, f"default of {name}")

    for template in (main, load(SUBSCRIPTIONS)):
        pre, post = default(template, "preEventTimeToLiveInMinutes"), default(template, "postEventTimeToLiveInMinutes")
        # A pre event fires 30-40 minutes before the window; a cancel is honoured until about
        # 10 minutes before it: retrying a pre event for longer than half an hour is useless.
        assert 10 <= pre <= 30, f"{template.relative}: pre-event time to live {pre}"
        assert post >= 60 * 12, f"{template.relative}: post-event time to live {post}"
        assert 1 <= default(template, "maxDeliveryAttempts") <= 30
    for name in ("preEventTimeToLiveInMinutes", "postEventTimeToLiveInMinutes", "maxDeliveryAttempts",
                 "deliveryMode"):
        assert default(main, name) == default(load(SUBSCRIPTIONS), name), f"{name} differs between the two passes"


def test_events_queue_of_queue_mode_is_the_one_the_app_reads() -> None:
    functions = registered_functions()
    queue_triggers = {
        binding.queue_name: name
        for name, function in functions.items()
        for binding in function.get_bindings()
        if binding.type == "queueTrigger"
    }
    main = load(MAIN)
    events_queue = literal(main, main.variables["eventsQueueName"].value, "eventsQueueName")
    work_queue = literal(main, main.variables["workQueueName"].value, "workQueueName")
    assert queue_triggers.get(events_queue) == "maintenance_events_queue"
    assert queue_triggers.get(work_queue) == "maintenance_worker"
    # The host moves a message that failed maxDequeueCount times to <queue>-poison: read there too.
    assert queue_triggers.get(f"{work_queue}-poison") == "maintenance_work_poison"
    assert queue_triggers.get(f"{events_queue}-poison") == "maintenance_events_poison"
    subscriptions = load(SUBSCRIPTIONS)
    assert literal(subscriptions, subscriptions.params["eventsQueueName"].value, "eventsQueueName") == events_queue

    storage = main.modules["storage"]
    body, env = main.instances(storage)[0]
    queues = literal(main, get(body, "params", "queueNames"), "storage queueNames")
    assert sorted(queues) == sorted([work_queue, f"{work_queue}-poison", events_queue, f"{events_queue}-poison"])


def test_a_log_alert_fires_on_every_toolkit_alert_line() -> None:
    from handlers.ledger.alerts import ALERT_MARKER

    text = (INFRA / "app" / "alerts.bicep").read_text()
    queries = re.findall(r"query: '([^']*)'", text)
    assert any(f'"{ALERT_MARKER}"' in query and query.startswith("traces") for query in queries), queries


def test_event_subscriptions_wait_for_the_code() -> None:
    main = load(MAIN)
    gate = main.params["deployEventSubscriptions"]
    assert literal(main, gate.value, "default of deployEventSubscriptions") is False
    module = next(
        m for m in main.modules.values() if m.type_string == "app/event-subscriptions.bicep"
    )
    assert module.value.type == "if_statement", "main.bicep must create the subscriptions only when asked"
    condition = named(module.value)[0]
    assert main.canonical(condition) == "(deployEventSubscriptions)", text(condition)
    parameters = json.loads(PARAMETERS.read_text())["parameters"]
    assert parameters["deployEventSubscriptions"]["value"] is False


# ------------------------------------------------------------------------------------------------
# (c) + (e): role assignments


def test_every_guid_in_the_templates_is_a_known_role_definition() -> None:
    unknown = []
    for template in templates():
        for node in walk(template.root):
            value = string_literal(node)
            if value is not None and GUID.search(value) and value.lower() not in BUILT_IN_ROLES:
                unknown.append(f"{template.relative}: {value}")
    assert not unknown, "GUIDs that are not one of the expected role definitions:\n" + "\n".join(unknown)


def test_role_assignments_use_known_roles_or_the_custom_roles() -> None:
    assignments = role_assignments()
    assert assignments
    granted: set[str] = set()
    for template, declaration, body, env in assignments:
        where = f"{template.relative}: {declaration.name}"
        node = get(body, "properties", "roleDefinitionId")
        assert node is not None, f"{where}: no roleDefinitionId"
        call = template.resolve(node, env)
        assert call_name(call) == "subscriptionResourceId", f"{where}: role {text(call)}"
        kind, role = call_arguments(call)
        assert string_literal(kind) == "Microsoft.Authorization/roleDefinitions", where
        for value in template.values(role, env):
            if isinstance(value, str):
                assert value.lower() in BUILT_IN_ROLES, f"{where}: unknown role {value}"
                granted.add(BUILT_IN_ROLES[value.lower()])
                continue
            # A custom role, referred to through its own declaration (which also makes the
            # assignment wait for the definition).
            symbol = text(template.resolve(role, env)).split(".")
            assert len(symbol) == 2 and symbol[1] == "name", f"{where}: role {value}"
            definition = template.resources.get(symbol[0])
            assert definition is not None and (definition.type_string or "").startswith(
                "Microsoft.Authorization/roleDefinitions@"), f"{where}: {symbol[0]} is not a role definition here"
            assert call_name(get(definition.value, "name") or definition.value) == "guid", where
            granted.add(f"custom {template.path.relative_to(INFRA).as_posix()}")
        assert literal(template, get(body, "properties", "principalType"), "principalType") == "ServicePrincipal", where
    custom = {f"custom {path.relative_to(INFRA).as_posix()}" for path in (CANCEL_ROLE, GUEST_ACTIONS_ROLE)}
    assert granted == set(BUILT_IN_ROLES.values()) | custom, granted


def test_the_only_custom_roles_are_the_cancel_and_guest_actions_roles() -> None:
    # A new custom role needs its own test of what it grants, like the two below.
    found = sorted(template.path for template, _ in role_definitions())
    assert found == sorted([CANCEL_ROLE, GUEST_ACTIONS_ROLE]), found


def test_custom_roles_use_a_stable_api_version_and_a_guid_name() -> None:
    for template, declaration in role_definitions():
        where = f"{template.relative}: {declaration.name}"
        version = (declaration.type_string or "").split("@")[1]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", version), f"{where}: api-version {version}"
        name = get(declaration.value, "name")
        assert name is not None and call_name(name) == "guid", f"{where}: name is not a guid() call"
        assert literal(template, get(declaration.value, "properties", "type"), "role type") == "CustomRole", where
        description = literal(template, get(declaration.value, "properties", "description"), "role description")
        assert "maintenance toolkit" in description, f"{where}: description {description!r}"


def test_the_cancel_role_grants_only_what_a_cancel_needs() -> None:
    template, declaration = role_definition(CANCEL_ROLE)
    permissions = literal(template, get(declaration.value, "properties", "permissions"), "permissions")
    assert [set(p["actions"]) for p in permissions] == [CANCEL_ROLE_ACTIONS]
    assert all(not p.get("dataActions") for p in permissions)
    scopes = get(declaration.value, "properties", "assignableScopes")
    # (tree-sitter-bicep splits `f().x` inside an array into two elements: compare the whole array.)
    assert scopes is not None and template.canonical(scopes) == "[resourceGroup().id]"
    # Assigned on the maintenance configuration itself, not on its group or subscription.
    assignment = next(
        d for d in template.resources_of_type("Microsoft.Authorization/roleAssignments")
    )
    scope = get(assignment.value, "scope")
    assert scope is not None and scope.type == "identifier"
    target = template.resources[text(scope)]
    assert target.is_existing
    assert (target.type_string or "").startswith("Microsoft.Maintenance/maintenanceConfigurations@")


def test_the_guest_actions_role_grants_only_run_commands_and_reading_arc_machines() -> None:
    template, declaration = role_definition(GUEST_ACTIONS_ROLE)
    assert template.target_scope == "subscription"
    permissions = literal(template, get(declaration.value, "properties", "permissions"), "permissions")
    assert len(permissions) == 1, permissions
    actions = permissions[0]["actions"]
    assert len(actions) == len(set(actions)), actions
    assert set(actions) == GUEST_ACTIONS_ROLE_ACTIONS, set(actions) ^ GUEST_ACTIONS_ROLE_ACTIONS
    # What Virtual Machine Contributor would add, and this role must not (spelled out so the exact
    # set above cannot be widened along with the constant).
    for action in actions:
        lowered = action.lower()
        assert "*" not in action, f"wildcard action {action}"
        assert lowered not in ("microsoft.compute/virtualmachines/write", "microsoft.compute/virtualmachines/delete",
                               "microsoft.hybridcompute/machines/write", "microsoft.hybridcompute/machines/delete")
        assert lowered.startswith(("microsoft.compute/virtualmachines/runcommands/",
                                   "microsoft.hybridcompute/machines/")), action
    assert not permissions[0].get("notActions")
    assert not permissions[0].get("dataActions") and not permissions[0].get("notDataActions")
    # Assignable on the target subscription only (tree-sitter-bicep splits `f().x` inside an array:
    # compare the whole array).
    scopes = get(declaration.value, "properties", "assignableScopes")
    assert scopes is not None and template.canonical(scopes) == "[subscription().id]", text(scopes or declaration.node)
    # One definition per subscription: guid(subscription, fixed string), a name unique in the tenant.
    name = get(declaration.value, "name")
    assert name is not None
    arguments = call_arguments(name)
    assert len(arguments) == 2 and template.canonical(arguments[0]) == "subscription().id", text(name)
    assert string_literal(arguments[1]), f"{text(name)}: the second argument is not a fixed string"
    role_name = literal(template, get(declaration.value, "properties", "roleName"), "roleName")
    assert role_name.startswith("Maintenance guest actions") and "${subscription().subscriptionId}" in role_name
    description = literal(template, get(declaration.value, "properties", "description"), "description")
    assert "Run Command" in description, description


def test_the_guest_actions_role_is_assigned_to_the_app_identity_on_each_target_subscription_when_enabled() -> None:
    main = load(MAIN)
    modules = [m for m in main.modules.values() if m.type_string == "app/guest-actions-role.bicep"]
    assert len(modules) == 1, modules
    module = modules[0]
    # [for (subscriptionId, i) in targetSubscriptionIds: if (enableGuestActions) {...}]
    assert module.value.type == "for_statement", "one deployment per target subscription"
    head, iterable, body = named(module.value)[0], named(module.value)[1], named(module.value)[-1]
    assert text(iterable) == "targetSubscriptionIds"
    assert body.type == "if_statement", "the role and its assignment must depend on enableGuestActions"
    assert main.canonical(named(body)[0]) == "(enableGuestActions)", text(named(body)[0])
    instance, _ = main.instances(module)[0]
    scope = get(instance, "scope")
    loop_variable = text(named(head)[0]) if head.type == "for_loop_parameters" else text(head)
    assert scope is not None and main.canonical(scope) == f"subscription({loop_variable})", text(scope or instance)
    principal = get(instance, "params", "principalId")
    assert principal is not None and main.canonical(principal) == "identity.outputs.principalId"

    template, definition = role_definition(GUEST_ACTIONS_ROLE)
    assignments = template.resources_of_type("Microsoft.Authorization/roleAssignments")
    assert len(assignments) == 1, assignments
    assignment = assignments[0]
    assert get(assignment.value, "scope") is None, "assigned on the subscription the module is deployed to"
    principal_type = literal(template, get(assignment.value, "properties", "principalType"), "principalType")
    assert principal_type == "ServicePrincipal"
    principal_id = get(assignment.value, "properties", "principalId")
    assert principal_id is not None and text(principal_id) == "principalId"
    # The role id refers to the definition's symbol, not a string: that reference is what makes
    # ARM create the definition before the assignment.
    role = get(assignment.value, "properties", "roleDefinitionId")
    assert role is not None
    symbols = {text(node) for node in walk(template.resolve(role)) if node.type == "identifier"}
    assert definition.name in symbols, \
        f"roleDefinitionId {text(template.resolve(role))} does not refer to {definition.name}"
    assert template.canonical(role) in (
        f"subscriptionResourceId('Microsoft.Authorization/roleDefinitions',{definition.name}.name)",
        f"{definition.name}.id",
    ), template.canonical(role)


def test_guest_actions_parameter_is_described_on_by_default_and_reaches_the_app() -> None:
    main = load(MAIN)
    param = main.params["enableGuestActions"]
    assert text(named(param.node)[1]) == "bool"
    assert literal(main, param.value, "default of enableGuestActions") is True
    description = param.decorator("description")
    assert description is not None, "enableGuestActions has no @description"
    described = literal(main, call_arguments(description)[0], "description of enableGuestActions")
    assert "MAINTENANCE_GUEST_ACTIONS" in described and "role" in described, described
    setting = get(main.variables["appSettings"].value, "MAINTENANCE_GUEST_ACTIONS")
    assert setting is not None and setting.type == "ternary_expression", "MAINTENANCE_GUEST_ACTIONS is not set"
    assert main.canonical(named(setting)[0]) == "enableGuestActions", text(setting)
    assert main.values(setting) == ["true", "false"]
    parameters = json.loads(PARAMETERS.read_text())["parameters"]
    assert parameters["enableGuestActions"]["value"] == "${MAINTENANCE_GUEST_ACTIONS=true}"


def test_role_assignment_names_are_guid_of_scope_principal_and_role() -> None:
    for template, declaration, body, env in role_assignments():
        where = f"{template.relative}: {declaration.name}"
        name = get(body, "name")
        assert name is not None and call_name(name) == "guid", f"{where}: name is not a guid() call"
        arguments = call_arguments(name)
        assert len(arguments) == 3, f"{where}: guid() takes {len(arguments)} arguments, not (scope, principal, role)"
        scope_arg, principal_arg, role_arg = (template.canonical(a, env) for a in arguments)
        scope = get(body, "scope")
        if scope is not None:
            expected_scope = f"{template.canonical(scope, env)}.id"
        else:
            expected_scope = {"subscription": "subscription().id", "resourceGroup": "resourceGroup().id"}[
                template.target_scope]
        assert scope_arg == expected_scope, f"{where}: guid() starts with {scope_arg}, the scope is {expected_scope}"
        principal = get(body, "properties", "principalId")
        assert principal is not None and principal_arg == template.canonical(principal, env), where
        role = get(body, "properties", "roleDefinitionId")
        assert role is not None and role_arg == template.canonical(role, env), where


def test_target_scopes_get_reader_vm_contributor_tag_and_snapshot_roles_through_scoped_modules() -> None:
    main = load(MAIN)
    by_path = {m.type_string: m for m in main.modules.values()}
    for path, scope_function, array in (
        ("app/target-subscription-roles.bicep", "subscription", "targetSubscriptionIds"),
        ("app/target-resource-group-roles.bicep", "resourceGroup", "targetResourceGroupIds"),
    ):
        module = by_path[path]
        assert module.value.type == "for_statement", f"{path}: one deployment per target"
        assert text(named(module.value)[1]) == array
        body, _ = main.instances(module)[0]
        scope = get(body, "scope")
        assert scope is not None and call_name(scope) == scope_function, f"{path}: scope {scope}"
        target = main.module_template(module)
        roles = set()
        for value in target.values(target.variables["assignedRoleIds"].value):
            roles |= {BUILT_IN_ROLES[role] for role in value}
        assert roles == {"Reader", "Virtual Machine Contributor", "Tag Contributor", "Disk Snapshot Contributor"}, roles
        assert literal(main, main.params[array].value, f"default of {array}") == []


# ------------------------------------------------------------------------------------------------
# (d): no keys, connection strings or secrets


def _flagged(template: Template) -> list[tuple[Node, str]]:
    found: list[tuple[Node, str]] = []
    for node in walk(template.root):
        if node.type not in ("identifier", "property_identifier", "string_content"):
            continue
        word = text(node).lower().replace("_", "").replace("-", "")
        found.extend((node, bad) for bad in FORBIDDEN if bad in word)
        if node.type == "identifier" and node.parent is not None and call_name(node.parent) == text(node) \
                and text(node).lower().startswith("list"):
            found.append((node, "list*() call"))
    return found


def _app_insights_setting_nodes(template: Template) -> set[tuple[int, int]]:
    """Byte ranges allowed to mention a connection string: the APPLICATIONINSIGHTS_CONNECTION_STRING
    setting whose value is <an Application Insights component>.properties.ConnectionString."""
    allowed: set[tuple[int, int]] = set()
    components = {d.name for d in template.resources_of_type(APP_INSIGHTS_TYPE)}
    for node in walk(template.root):
        if node.type != "object_property" or text(node.children[0]) != APP_INSIGHTS_SETTING:
            continue
        chain = member_chain(named(node)[-1])
        if chain is not None and len(chain) == 3 and chain[0] in components \
                and chain[1:] == ["properties", "ConnectionString"]:
            allowed |= {(n.start_byte, n.end_byte) for n in walk(node)}
    return allowed


def test_no_keys_connection_strings_or_secrets_in_templates() -> None:
    problems = []
    for template in templates():
        allowed = _app_insights_setting_nodes(template)
        for node, word in _flagged(template):
            if (node.start_byte, node.end_byte) not in allowed:
                problems.append(f"{template.relative}:{node.start_point[0] + 1}: {word} in {text(node)!r}")
    assert not problems, "\n".join(problems)


def test_no_output_carries_a_key_connection_string_or_secret() -> None:
    problems = []
    for template in templates():
        for output in template.outputs.values():
            # Variables substituted, so an output of a settings object is caught too.
            expanded = template.canonical(output.value).lower().replace("_", "").replace("-", "")
            problems += [f"{template.relative}: output {output.name}: {bad}" for bad in FORBIDDEN if bad in expanded]
            if output.decorator("secure") is not None:
                problems.append(f"{template.relative}: output {output.name} is @secure()")
    assert not problems, "\n".join(problems)


def test_storage_and_app_insights_accept_only_entra_id() -> None:
    accounts = [(t, d) for t in templates() for d in t.resources_of_type("Microsoft.Storage/storageAccounts")
                if not d.is_existing]
    assert len(accounts) == 1, accounts
    template, account = accounts[0]
    props = literal(template, get(account.value, "properties"), "storage properties")
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    components = [(t, d) for t in templates() for d in t.resources_of_type(APP_INSIGHTS_TYPE) if not d.is_existing]
    assert len(components) == 1
    template, component = components[0]
    assert literal(template, get(component.value, "properties", "DisableLocalAuth"), "DisableLocalAuth") is True


# ------------------------------------------------------------------------------------------------
# The Function App


def _function_app() -> tuple[Template, Declaration]:
    sites = [(t, d) for t in templates() for d in t.resources_of_type("Microsoft.Web/sites") if not d.is_existing]
    assert len(sites) == 1, sites
    return sites[0]


def _app_settings() -> dict[str, Any]:
    """Every app setting the deployment gives the Function App: the host settings of
    function-app.bicep merged with the appSettings object main.bicep passes in."""
    template, site = _function_app()
    config = [d for d in template.resources.values() if d.type_string == "config"]
    assert len(config) == 1
    settings_node = get(config[0].value, "properties")
    assert settings_node is not None and call_name(settings_node) == "union"
    host_settings = single(template.values(call_arguments(settings_node)[0]), "host settings")
    main = load(MAIN)
    module = next(m for m in main.modules.values() if m.type_string == "app/function-app.bicep")
    body, env = main.instances(module)[0]
    app_settings_node = get(body, "params", "appSettings")
    assert app_settings_node is not None
    app_settings = main.values(app_settings_node, env)
    keys: dict[str, Any] = dict(host_settings)
    for alternative in app_settings:
        keys.update(alternative)
    return keys


def test_function_app_runs_python_311_on_flex_consumption_as_the_user_assigned_identity() -> None:
    template, site = _function_app()
    assert literal(template, get(site.value, "kind"), "kind") == "functionapp,linux"
    assert literal(template, get(site.value, "identity", "type"), "identity type") == "UserAssigned"
    config = get(site.value, "properties", "functionAppConfig")
    assert literal(template, get(config, "runtime"), "runtime") == {"name": "python", "version": "3.11"}
    auth = literal(template, get(config, "deployment", "storage", "authentication", "type"), "deployment auth")
    assert auth == "UserAssignedIdentity"
    assert get(config, "scaleAndConcurrency", "maximumInstanceCount") is not None
    assert get(config, "scaleAndConcurrency", "instanceMemoryMB") is not None
    plan = template.resources_of_type("Microsoft.Web/serverfarms")[0]
    assert literal(template, get(plan.value, "sku"), "plan sku") == {"name": "FC1", "tier": "FlexConsumption"}
    main = load(MAIN)
    assert literal(main, main.params["instanceMemoryMB"].value, "instanceMemoryMB") == 2048


def test_app_settings_are_identity_based_and_read_by_the_app() -> None:
    settings = _app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    for name in ("AzureWebJobsStorage__accountName", "AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID",
                 "APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "AZURE_RESOURCE_MANAGER_ENDPOINT",
                 "MAINTENANCE_LEDGER_TABLE", "MAINTENANCE_WORK_QUEUE", "MAINTENANCE_EVENTS_QUEUE",
                 "MAINTENANCE_DRY_RUN", "MAINTENANCE_ALLOWED_CONFIGURATION_IDS", "MAINTENANCE_SNAPSHOT_DISKS",
                 "MAINTENANCE_SNAPSHOT_RESOURCE_GROUP", "MAINTENANCE_CANCEL_ON_FAILURE", "MAINTENANCE_GUEST_ACTIONS",
                 "MAINTENANCE_REPORT_CONTAINER"):
        assert name in settings, f"app setting {name} is not set"
    assert not FLEX_REJECTED_SETTINGS & set(settings), FLEX_REJECTED_SETTINGS & set(settings)
    authentication = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert authentication.startswith("ClientId=") and authentication.endswith(";Authorization=AAD")

    # Every other name is one handlers/core/settings.py reads (a typo would be silently ignored).
    source = (ROOT / "handlers" / "core" / "settings.py").read_text()
    known = {node.value for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    unread = sorted(set(settings) - known - PLATFORM_SETTINGS)
    assert not unread, f"app settings the app does not read: {unread}"


def test_app_setting_defaults_match_the_app_and_the_storage() -> None:
    from handlers.core.settings import Settings

    defaults = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    settings = _app_settings()
    assert settings["MAINTENANCE_LEDGER_TABLE"] == defaults.ledger_table
    assert settings["MAINTENANCE_WORK_QUEUE"] == defaults.work_queue
    assert settings["MAINTENANCE_EVENTS_QUEUE"] == defaults.events_queue
    assert settings["MAINTENANCE_REPORT_CONTAINER"] == defaults.report_container
    main = load(MAIN)
    body, _ = main.instances(main.modules["storage"])[0]
    assert literal(main, get(body, "params", "ledgerTableName"), "ledgerTableName") == defaults.ledger_table
    assert literal(main, get(body, "params", "reportContainerName"), "reportContainerName") == \
        defaults.report_container, "the container the reports go to is created with the storage"
    dry_run = get(main.variables["appSettings"].value, "MAINTENANCE_DRY_RUN")
    assert dry_run is not None and set(main.values(dry_run)) == {"true", "false"}
    assert literal(main, main.params["dryRun"].value, "default of dryRun") is True


# ------------------------------------------------------------------------------------------------
# (f) + (g): azd


def test_parameters_file_is_valid_and_sets_only_declared_parameters() -> None:
    document = json.loads(PARAMETERS.read_text())
    assert document.get("$schema", "").endswith("deploymentParameters.json#")
    parameters = document["parameters"]
    main = load(MAIN)
    undeclared = sorted(set(parameters) - set(main.params))
    assert not undeclared, f"main.parameters.json sets parameters main.bicep does not declare: {undeclared}"
    required = {name for name, param in main.params.items() if not param.has_default}
    assert required <= set(parameters), f"required parameters missing: {sorted(required - set(parameters))}"
    assert all(set(entry) == {"value"} for entry in parameters.values())


def _azure_yaml() -> dict[str, Any]:
    document = yaml.safe_load(AZURE_YAML.read_text())
    assert isinstance(document, dict)
    return document


def _hook_script() -> Path:
    hook = _azure_yaml().get("hooks", {}).get("postdeploy")
    assert hook, "azure.yaml has no postdeploy hook"
    run = (hook.get("posix") or hook)["run"]
    return ROOT / run


def test_azure_yaml_deploys_the_app_and_names_an_executable_postdeploy_hook() -> None:
    document = _azure_yaml()
    api = document["services"]["api"]
    assert (api["project"], api["language"], api["host"]) == (".", "python", "function")
    assert document.get("infra", {}).get("path", "infra") == "infra"
    script = _hook_script()
    assert script.is_file(), f"postdeploy hook {script} does not exist"
    assert os.access(script, os.X_OK), f"postdeploy hook {script} is not executable"
    assert script.read_text().startswith("#!/bin/sh\n")
    # The Function App carries the tag azd finds the service by.
    template, site = _function_app()
    tags = get(site.value, "tags")
    assert tags is not None
    service_tags = [v for node in find_properties(tags, "azd-service-name") for v in template.values(node)]
    assert service_tags == ["api"], service_tags


def test_postdeploy_hook_deploys_subscriptions_bicep_with_its_parameters_from_main_outputs() -> None:
    script = _hook_script().read_text()
    assert "--template-file" in script and "subscriptions.bicep" in script
    # Shell has no tree to walk: read the name=value pairs after --parameters.
    passed = dict(re.findall(r"^\s+(\w+)=\"\$(\w+)\"", script, re.MULTILINE))
    subscriptions = load(SUBSCRIPTIONS)
    assert set(passed) == set(subscriptions.params), (
        f"hook passes {sorted(passed)}, subscriptions.bicep declares {sorted(subscriptions.params)}"
    )
    outputs = set(load(MAIN).outputs)
    required_env = set(re.findall(r"\$\{(\w+):\?", script))
    assert set(passed.values()) <= required_env, "every variable the hook passes is checked first"
    assert required_env <= outputs, f"the hook needs {sorted(required_env - outputs)}, which main.bicep does not output"
    # subscriptions.bicep is the same module main.bicep uses on a second pass.
    module_paths = {m.type_string for m in subscriptions.modules.values()}
    assert module_paths == {"app/event-subscriptions.bicep"}
