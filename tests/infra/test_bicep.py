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
    property_key,
    same,
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
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
}
CANCEL_ROLE_ACTIONS = {"Microsoft.Maintenance/applyUpdates/write"}
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
# The custom role for sending e-mail with an Entra identity, as the Azure Communication Services
# documentation lists it ("Use a custom role to limit permissions granted to the Microsoft Entra
# Application", in "Assign a role to a Microsoft Entra application for SMTP authentication"). The
# built-in Communication and Email Service Owner would also do, but manages everything and reads keys.
EMAIL_SENDER_ROLE_ACTIONS = {
    "Microsoft.Communication/CommunicationServices/Read",
    "Microsoft.Communication/CommunicationServices/Write",
    "Microsoft.Communication/EmailServices/write",
}
CANCEL_ROLE = INFRA / "app/maintenance-cancel-role.bicep"
GUEST_ACTIONS_ROLE = INFRA / "app/guest-actions-role.bicep"
EMAIL = INFRA / "app/email.bicep"
EMAIL_ROLE = INFRA / "app/email-sender-role.bicep"
CUSTOM_ROLES = INFRA / "app/custom-roles.bicep"
# The machine operator role, one definition per target subscription and per target resource group.
OPERATOR_ROLES = (INFRA / "app/target-subscription-roles.bicep", INFRA / "app/target-resource-group-roles.bicep")
NOTIFY_TOPIC = INFRA / "app/notify-topic.bicep"
KEY_VAULT = INFRA / "app/key-vault.bicep"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)

# Words that mean a key, a connection string or a secret travels through a template. Compared
# with identifiers, property names and string contents, lower-cased, without '_' and '-'.
FORBIDDEN = ("listkeys", "listconnectionstrings", "listsecrets", "secret", "accountkey", "connectionstring")
# The one exception: the Application Insights connection string, as the app setting of that name.
# It carries an instrumentation key, which no longer authorizes anything once local auth is
# disabled on the component (checked below); telemetry is sent with the identity's token.
APP_INSIGHTS_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
APP_INSIGHTS_TYPE = "Microsoft.Insights/components"

# The app settings that carry a secret value (a Teams Workflows URL with its signature, the key that
# signs the hold links): only ever a Key Vault reference to an entry of the toolkit's vault, which the
# platform resolves. The reference is the one string allowed to say "secret" (SecretUri=...).
KEY_VAULT_REFERENCE_SETTINGS = {"MAINTENANCE_TEAMS_WEBHOOK_URL", "MAINTENANCE_HOLD_KEY"}
KEY_VAULT_REFERENCE = re.compile(r"@Microsoft\.KeyVault\(SecretUri=https://(?P<host>[^/]+)/secrets/(?P<entry>[A-Za-z0-9-]+)/\)")
KEY_VAULT_ENTRY_TYPE = "Microsoft.KeyVault/vaults/secrets"

# Settings the platform reads rather than the app (handlers/core/settings.py reads the rest).
PLATFORM_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                     "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
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
    custom = {f"custom {path.relative_to(INFRA).as_posix()}"
              for path in (CANCEL_ROLE, GUEST_ACTIONS_ROLE, EMAIL_ROLE, *OPERATOR_ROLES)}
    assert granted == set(BUILT_IN_ROLES.values()) | custom, granted


def test_the_only_custom_roles_are_the_cancel_guest_actions_machine_operator_and_email_sender_roles() -> None:
    # A new custom role needs its own test of what it grants, like those below and in test_least_privilege.py.
    found = sorted(template.path for template, _ in role_definitions())
    assert found == sorted([CANCEL_ROLE, GUEST_ACTIONS_ROLE, EMAIL_ROLE, *OPERATOR_ROLES]), found


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
    # Only on the second pass (test_least_privilege.py checks the condition).
    body, _ = template.instances(assignment)[0]
    scope = get(body, "scope")
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
    roles = load(CUSTOM_ROLES)
    modules = [m for m in roles.modules.values() if m.type_string == "guest-actions-role.bicep"]
    assert len(modules) == 1, modules
    module = modules[0]
    # [for (subscriptionId, i) in targetSubscriptionIds: if (enableGuestActions) {...}]
    assert module.value.type == "for_statement", "one deployment per target subscription"
    head, iterable, body = named(module.value)[0], named(module.value)[1], named(module.value)[-1]
    assert text(iterable) == "targetSubscriptionIds"
    assert body.type == "if_statement", "the role and its assignment must depend on enableGuestActions"
    assert roles.canonical(named(body)[0]) == "(enableGuestActions)", text(named(body)[0])
    instance, _ = roles.instances(module)[0]
    scope = get(instance, "scope")
    loop_variable = text(named(head)[0]) if head.type == "for_loop_parameters" else text(head)
    assert scope is not None and roles.canonical(scope) == f"subscription({loop_variable})", text(scope or instance)
    principal = get(instance, "params", "principalId")
    assert principal is not None and roles.canonical(principal) == "principalId"
    main = load(MAIN)
    (custom,) = [m for m in main.modules.values() if m.type_string == "app/custom-roles.bicep"]
    given, _ = main.instances(custom)[0]
    expected_params = {"principalId": "identity.outputs.principalId", "enableGuestActions": "enableGuestActions",
                       "targetSubscriptionIds": "targetSubscriptionIds"}
    for param, expected in expected_params.items():
        node = get(given, "params", param)
        assert node is not None and main.canonical(node) == expected, (param, node and text(node))

    template, definition = role_definition(GUEST_ACTIONS_ROLE)
    assignments = template.resources_of_type("Microsoft.Authorization/roleAssignments")
    assert len(assignments) == 1, assignments
    assignment, _ = template.instances(assignments[0])[0]
    assert get(assignment, "scope") is None, "assigned on the subscription the module is deployed to"
    principal_type = literal(template, get(assignment, "properties", "principalType"), "principalType")
    assert principal_type == "ServicePrincipal"
    principal_id = get(assignment, "properties", "principalId")
    assert principal_id is not None and text(principal_id) == "principalId"
    # The role id refers to the definition's symbol, not a string: that reference is what makes
    # ARM create the definition before the assignment.
    role = get(assignment, "properties", "roleDefinitionId")
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


def _key_vault_nodes(template: Template) -> set[tuple[int, int]]:
    """Byte ranges allowed to say "secret": the type of a Key Vault entry resource, and a Key Vault
    reference (@Microsoft.KeyVault(SecretUri=https://<vault>/secrets/<entry>/)) as the value of one
    of KEY_VAULT_REFERENCE_SETTINGS. Anything else naming a secret still fails."""
    allowed: set[tuple[int, int]] = set()
    for declaration in template.resources_of_type(KEY_VAULT_ENTRY_TYPE):
        type_node = next(child for child in named(declaration.node)[1:] if child.type == "string")
        allowed |= {(n.start_byte, n.end_byte) for n in walk(type_node)}
    for node in walk(template.root):
        if node.type != "object_property" or property_key(node) not in KEY_VAULT_REFERENCE_SETTINGS:
            continue
        value = named(node)[-1]
        values = template.values(value)
        if value.type == "string" and values and all(
                isinstance(v, str) and KEY_VAULT_REFERENCE.fullmatch(v) for v in values):
            allowed |= {(n.start_byte, n.end_byte) for n in walk(value)}
    return allowed


def test_no_keys_connection_strings_or_secrets_in_templates() -> None:
    problems = []
    for template in templates():
        allowed = _app_insights_setting_nodes(template) | _key_vault_nodes(template)
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


def test_the_app_s_telemetry_goes_to_application_insights_through_opentelemetry() -> None:
    settings = _app_settings()
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    assert json.loads((ROOT / "host.json").read_text()).get("telemetryMode") == "OpenTelemetry"
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^azure-monitor-opentelemetry>=", requirements, re.MULTILINE)


def test_the_saved_queries_are_the_readme_s_and_read_the_app_s_attributes() -> None:
    from handlers.core import telemetry
    from handlers.core.status import CancelOutcome, Outcome

    template = (INFRA / "app" / "monitoring.bicep").read_text()
    assert "'Microsoft.OperationalInsights/queryPacks/queries@2019-09-01'" in template
    saved = [body.strip() for body in re.findall(r"body: '''(.*?)'''", template, re.DOTALL)]
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Telemetry\n"):readme.index("\n## Settings\n")]
    documented = [block.strip() for block in re.findall(r"```kusto\n(.*?)```", section, re.DOTALL)]
    assert len(saved) == 3 and saved == documented

    names = {value for key, value in vars(telemetry).items()
             if key.isupper() and isinstance(value, str) and value.startswith("maintenance.")}
    read = {name for query in saved for name in re.findall(r'customDimensions\["([^"]+)"\]', query)}
    assert read and read <= names, read - names
    _, cancelled, failed_starts = saved
    assert f'"{CancelOutcome.CANCELLED}"' in cancelled
    assert f'"{Outcome.FAILED}"' in failed_starts and f'"{Outcome.TIMED_OUT}"' in failed_starts


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


def test_function_app_runs_python_312_on_flex_consumption_as_the_user_assigned_identity() -> None:
    template, site = _function_app()
    assert literal(template, get(site.value, "kind"), "kind") == "functionapp,linux"
    assert literal(template, get(site.value, "identity", "type"), "identity type") == "UserAssigned"
    config = get(site.value, "properties", "functionAppConfig")
    assert literal(template, get(config, "runtime"), "runtime") == {"name": "python", "version": "3.12"}
    # No basic-auth publishing (FTP, SCM): deployments use Entra ID.
    policies = template.resources_of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {literal(template, get(p.value, "name"), "policy") for p in policies} == {"ftp", "scm"}
    assert all(literal(template, get(p.value, "properties", "allow"), "allow") is False for p in policies)
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
                 "MAINTENANCE_REPORT_CONTAINER", "MAINTENANCE_HANDOFF_CONTAINER"):
        assert name in settings, f"app setting {name} is not set"
    assert not FLEX_REJECTED_SETTINGS & set(settings), FLEX_REJECTED_SETTINGS & set(settings)
    authentication = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert authentication.startswith("ClientId=") and authentication.endswith(";Authorization=AAD")

    # The optional ones (notifications, links) are among the alternatives too.
    for name in ("MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT", "MAINTENANCE_EMAIL_ENDPOINT", "MAINTENANCE_EMAIL_SENDER",
                 "MAINTENANCE_EMAIL_TO", "MAINTENANCE_TEAMS_WEBHOOK_URL", "MAINTENANCE_HOLD_KEY",
                 "MAINTENANCE_APPROVAL_MODE"):
        assert name in settings, f"app setting {name} is never set"

    # Every other name is one the app's settings code reads (a typo would be silently ignored):
    # handlers/core/settings.py and handlers/core/output_settings.py (notifications, links, checks).
    known: set[str] = set()
    for module in ("settings.py", "output_settings.py"):
        source = (ROOT / "handlers" / "core" / module).read_text()
        known |= {node.value for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    unread = sorted(set(settings) - known - PLATFORM_SETTINGS)
    assert not unread, f"app settings the app does not read: {unread}"


def test_nothing_in_front_of_the_app_blocks_the_anonymous_link_endpoint() -> None:
    # The hold/approve links are GETs from a mail or Teams client to /api/maintenance/{action},
    # authorized by the signed token in the link (never a function key): no network rule, no App
    # Service authentication and no other route prefix may stand in the way.
    template, site = _function_app()
    props = get(site.value, "properties")
    assert literal(template, get(props, "httpsOnly"), "httpsOnly") is True
    assert get(props, "publicNetworkAccess") is None or \
        literal(template, get(props, "publicNetworkAccess"), "publicNetworkAccess") == "Enabled"
    site_config = get(props, "siteConfig")
    for key in ("ipSecurityRestrictions", "ipSecurityRestrictionsDefaultAction"):
        assert get(site_config, key) is None, f"{template.relative}: siteConfig.{key} would filter the links"
    for each in templates():
        for declaration in each.resources.values():
            kind = (declaration.type_string or "").split("@")[0]
            if kind in ("config", "Microsoft.Web/sites/config"):
                name = literal(each, get(declaration.value, "name"), "config name")
                assert name not in ("authsettings", "authsettingsV2"), f"{each.relative}: {name} would ask for a login"
    host = json.loads((ROOT / "host.json").read_text())
    assert host.get("extensions", {}).get("http", {}).get("routePrefix", "api") == "api"
    from handlers.core.run_links import ROUTE

    link = registered_functions().get("maintenance_link")
    assert link is not None, "function_app.py registers no maintenance_link, the links' endpoint"

    triggers = [b.get_dict_repr() for b in link.get_bindings() if b.type == "httpTrigger"]
    assert len(triggers) == 1, triggers
    assert str(getattr(triggers[0]["authLevel"], "value", triggers[0]["authLevel"])).lower() == "anonymous"
    assert triggers[0]["route"] == ROUTE


def test_app_setting_defaults_match_the_app_and_the_storage() -> None:
    from handlers.core.settings import Settings

    defaults = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    settings = _app_settings()
    assert settings["MAINTENANCE_LEDGER_TABLE"] == defaults.ledger_table
    assert settings["MAINTENANCE_WORK_QUEUE"] == defaults.work_queue
    assert settings["MAINTENANCE_EVENTS_QUEUE"] == defaults.events_queue
    assert settings["MAINTENANCE_REPORT_CONTAINER"] == defaults.report_container
    assert settings["MAINTENANCE_HANDOFF_CONTAINER"] == defaults.handoff_container
    main = load(MAIN)
    body, _ = main.instances(main.modules["storage"])[0]
    assert literal(main, get(body, "params", "ledgerTableName"), "ledgerTableName") == defaults.ledger_table
    assert literal(main, get(body, "params", "reportContainerName"), "reportContainerName") == \
        defaults.report_container, "the container the reports go to is created with the storage"
    dry_run = get(main.variables["appSettings"].value, "MAINTENANCE_DRY_RUN")
    assert dry_run is not None and set(main.values(dry_run)) == {"true", "false"}
    assert literal(main, main.params["dryRun"].value, "default of dryRun") is True


# ------------------------------------------------------------------------------------------------
# Notifications (Event Grid topic, ACS e-mail, Teams) and the hold/approve links


NOTIFY_MODULES = {"app/notify-topic.bicep": "enableNotifyTopic", "app/email.bicep": "createEmail",
                  "app/key-vault.bicep": "createKeyVault"}
NOTIFY_OUTPUTS = ("NOTIFY_TOPIC_ENDPOINT", "NOTIFY_EMAIL_SENDER", "KEY_VAULT_NAME")


def evaluate(template: Template, node: Node, overrides: dict[str, Any] | None = None) -> Any:
    """What an expression computes from the parameters' defaults (and `overrides`), evaluated the
    way ARM does: a ternary takes one branch only. Opaque where the deployment decides. Covers
    what conditions here use: literals, parameters, variables, !, ||, &&, ==, !=, ?:, empty(),
    union() and object literals."""
    overrides = overrides or {}
    kind = node.type
    if kind == "parenthesized_expression":
        return evaluate(template, named(node)[0], overrides)
    if kind == "identifier":
        name = text(node)
        if name in overrides:
            return overrides[name]
        if name in template.params:
            param = template.params[name]
            return evaluate(template, param.value, overrides) if param.has_default else Opaque(name)
        if name in template.variables:
            return evaluate(template, template.variables[name].value, overrides)
        return Opaque(name)
    if kind in ("string", "number", "boolean", "null", "array"):
        values = template.values(node)
        return values[0] if len(values) == 1 else Opaque(text(node))
    if kind == "object":
        return {key: evaluate(template, value, overrides) for key, value in properties(node).items()}
    if kind == "unary_expression":
        value = evaluate(template, named(node)[0], overrides)
        return (not value) if text(node.children[0]) == "!" and isinstance(value, bool) else Opaque(text(node))
    if kind == "binary_expression":
        left, operator, right = node.children[0], text(node.children[1]), node.children[2]
        a, b = evaluate(template, left, overrides), evaluate(template, right, overrides)
        if operator in ("||", "&&") and isinstance(a, bool) and isinstance(b, bool):
            return (a or b) if operator == "||" else (a and b)
        if operator in ("==", "!=") and not isinstance(a, Opaque) and not isinstance(b, Opaque):
            return (a == b) if operator == "==" else (a != b)
        return Opaque(text(node))
    if kind == "ternary_expression":
        condition, when_true, when_false = named(node)
        chosen = evaluate(template, condition, overrides)
        if not isinstance(chosen, bool):
            return Opaque(text(node))
        return evaluate(template, when_true if chosen else when_false, overrides)
    if kind == "call_expression" and call_name(node) == "empty":
        value = evaluate(template, call_arguments(node)[0], overrides)
        return len(value) == 0 if isinstance(value, str | list | dict) else Opaque(text(node))
    if kind == "call_expression" and call_name(node) == "union":
        parts = [evaluate(template, argument, overrides) for argument in call_arguments(node)]
        if all(isinstance(part, dict) for part in parts):
            merged: dict[str, Any] = {}
            for part in parts:
                merged.update(part)
            return merged
    return Opaque(text(node))


def _main_module(path: str) -> Declaration:
    main = load(MAIN)
    modules = [m for m in main.modules.values() if m.type_string == path]
    assert len(modules) == 1, f"main.bicep deploys {path} {len(modules)} times"
    return modules[0]


def _module_condition(module: Declaration) -> Node:
    assert module.value.type == "if_statement", f"module {module.name} is not conditional"
    return named(module.value)[0]


def _function_app_module_body() -> Node:
    main = load(MAIN)
    body, _ = main.instances(_main_module("app/function-app.bicep"))[0]
    return body


def _role_of(template: Template, assignment: Node) -> str:
    role = get(assignment, "properties", "roleDefinitionId")
    assert role is not None
    call = template.resolve(role)
    assert call_name(call) == "subscriptionResourceId", text(call)
    return BUILT_IN_ROLES[single(template.values(call_arguments(call)[1]), "role id").lower()]


def _scope_resource(template: Template, assignment: Node) -> Declaration:
    scope = get(assignment, "scope")
    assert scope is not None and scope.type == "identifier", f"{template.relative}: scope {scope}"
    return template.resources[text(scope)]


def _is_inside(node: Node, ancestor: Node) -> bool:
    current: Node | None = node
    while current is not None:
        if same(current, ancestor):
            return True
        current = current.parent
    return False


def test_notifications_and_links_are_off_by_default_and_add_nothing() -> None:
    main = load(MAIN)
    for name in ("enableNotifyTopic", "enableEmailNotifications", "enableTeamsNotifications", "enableHoldLinks",
                 "enableKeyVault", "keyVaultPurgeProtection"):
        param = main.params[name]
        assert text(named(param.node)[1]) == "bool", f"{name} is not a bool"
        assert evaluate(main, param.value) is False, f"{name} is on by default"
        assert param.decorator("description") is not None, f"{name} has no @description"
    assert evaluate(main, main.params["approvalMode"].value) == "hold"
    # With the defaults: none of the new modules, no new app setting, no Key Vault identity, empty outputs.
    for path, condition in NOTIFY_MODULES.items():
        module = _main_module(path)
        assert text(_module_condition(module)) == f"({condition})", text(module.value)
        assert evaluate(main, _module_condition(module)) is False, f"{path} is deployed by default"
    body = _function_app_module_body()
    settings = get(body, "params", "appSettings")
    assert settings is not None and call_name(settings) == "union"
    assert [text(a) for a in call_arguments(settings)] == ["appSettings", "outputAppSettings"]
    assert evaluate(main, main.variables["outputAppSettings"].value) == {}
    resolve = get(body, "params", "resolveKeyVaultReferences")
    assert resolve is not None and evaluate(main, resolve) is False
    for output in NOTIFY_OUTPUTS:
        assert evaluate(main, main.outputs[output].value) == "", f"output {output} is not empty by default"
    # azd passes the same defaults.
    parameters = json.loads(PARAMETERS.read_text())["parameters"]
    for name in ("enableNotifyTopic", "enableEmailNotifications", "emailRecipients", "enableTeamsNotifications",
                 "enableHoldLinks", "approvalMode", "enableKeyVault", "keyVaultPurgeProtection"):
        match = re.fullmatch(r"\$\{[A-Z_]+=(.*)\}", parameters[name]["value"])
        assert match, f"main.parameters.json: {name} is not an azd variable with a default"
        default = evaluate(main, main.params[name].value)
        assert match[1] == (str(default).lower() if isinstance(default, bool) else default), name
    for name in ("teamsWebhookUrl", "holdKey"):
        assert name not in parameters, f"main.parameters.json must not route {name} through azd's plain .env"


def test_each_setting_group_and_its_resources_are_turned_on_together() -> None:
    main = load(MAIN)
    settings = main.variables["outputAppSettings"].value
    switches = [(enable_topic, enable_email, existing, enable_teams, enable_links, mode, enable_vault)
                for enable_topic in (False, True) for enable_email in (False, True) for existing in ("", "https://x")
                for enable_teams in (False, True) for enable_links in (False, True) for mode in ("hold", "approve")
                for enable_vault in (False, True)]
    body = _function_app_module_body()
    for topic, email, existing, teams, links, mode, vault in switches:
        given = {"enableNotifyTopic": topic, "enableEmailNotifications": email, "existingEmailEndpoint": existing,
                 "enableTeamsNotifications": teams, "enableHoldLinks": links, "approvalMode": mode,
                 "enableKeyVault": vault}
        where = f"with {given}"
        values = evaluate(main, settings, given)
        assert isinstance(values, dict), where
        deployed = {path: evaluate(main, _module_condition(_main_module(path)), given) for path in NOTIFY_MODULES}
        assert ("MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT" in values) is topic is deployed["app/notify-topic.bicep"], where
        email_keys = {"MAINTENANCE_EMAIL_ENDPOINT", "MAINTENANCE_EMAIL_SENDER", "MAINTENANCE_EMAIL_TO"}
        assert (email_keys & set(values)) == (email_keys if email else set()), where
        # New ACS resources only for e-mail without an existing resource.
        assert deployed["app/email.bicep"] is (email and not existing), where
        references = KEY_VAULT_REFERENCE_SETTINGS & set(values)
        assert ("MAINTENANCE_TEAMS_WEBHOOK_URL" in references) is teams, where
        assert ("MAINTENANCE_HOLD_KEY" in references) is (links or mode == "approve"), where
        assert ("MAINTENANCE_APPROVAL_MODE" in values) is ("MAINTENANCE_HOLD_KEY" in values), where
        # A reference needs the vault, and the site must resolve it with its user-assigned identity.
        if references:
            assert deployed["app/key-vault.bicep"] is True, where
        assert deployed["app/key-vault.bicep"] is bool(references or vault), where
        resolve = get(body, "params", "resolveKeyVaultReferences")
        assert resolve is not None and evaluate(main, resolve, given) is bool(references), where


def test_the_notify_topic_takes_cloud_events_1_0_and_no_keys() -> None:
    topics = [(t, d) for t in templates() for d in t.resources_of_type("Microsoft.EventGrid/topics")
              if not d.is_existing]
    assert len(topics) == 1, topics
    template, topic = topics[0]
    assert template.path == NOTIFY_TOPIC
    props = literal(template, get(topic.value, "properties"), "topic properties")
    assert props["inputSchema"] == "CloudEventSchemaV1_0", props
    assert props["disableLocalAuth"] is True, "SAS keys must be off: the app publishes with its identity"
    assert props["minimumTlsVersionAllowed"] == "1.2"
    # The app publishes to the endpoint the topic reports.
    endpoint = template.outputs["endpoint"]
    assert template.canonical(endpoint.value) == f"{topic.name}.properties.endpoint"
    main = load(MAIN)
    values = [v for alternative in main.values(main.variables["outputAppSettings"].value)
              for k, v in alternative.items() if k == "MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT"]
    assert values and all(isinstance(v, Opaque) and v.text == "notifyTopic.outputs.endpoint" for v in values), values


def test_the_apps_only_role_on_the_notify_topic_is_eventgrid_data_sender() -> None:
    # Every role assignment scoped to an Event Grid custom topic, in any template.
    found = []
    for template, declaration, body, _ in role_assignments():
        scope = get(body, "scope")
        if scope is None or scope.type != "identifier" or text(scope) not in template.resources:
            continue
        target = template.resources[text(scope)]
        if (target.type_string or "").split("@")[0] == "Microsoft.EventGrid/topics":
            found.append((template, declaration, body))
    assert len(found) == 1, [f"{t.relative}: {d.name}" for t, d, _ in found]
    template, declaration, body = found[0]
    assert _role_of(template, body) == "EventGrid Data Sender"
    principal = get(body, "properties", "principalId")
    assert principal is not None and text(principal) == "publisherPrincipalId"
    module = _main_module("app/notify-topic.bicep")
    instance, _ = load(MAIN).instances(module)[0]
    given = get(instance, "params", "publisherPrincipalId")
    assert given is not None and text(given) == "identity.outputs.principalId"
    assert text(_module_condition(module)) == "(enableNotifyTopic)"


def test_email_links_an_azure_managed_domain_to_a_communication_service_without_keys() -> None:
    template = load(EMAIL)
    (service,) = template.resources_of_type("Microsoft.Communication/emailServices")
    (domain,) = template.resources_of_type("Microsoft.Communication/emailServices/domains")
    (communication,) = template.resources_of_type("Microsoft.Communication/communicationServices")
    for declaration in (service, domain, communication):
        assert literal(template, get(declaration.value, "location"), "location") == "global", declaration.name
        version = (declaration.type_string or "").split("@")[1]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", version), f"{declaration.name}: api-version {version}"
    assert text(get(domain.value, "parent") or domain.node) == service.name
    assert literal(template, get(domain.value, "name"), "domain name") == "AzureManagedDomain"
    assert literal(template, get(domain.value, "properties", "domainManagement"), "domainManagement") == "AzureManaged"
    linked = get(communication.value, "properties", "linkedDomains")
    assert linked is not None and template.canonical(linked) == f"[{domain.name}.id]", text(communication.node)
    assert literal(template, get(communication.value, "properties", "disableLocalAuth"), "disableLocalAuth") is True
    # Both in the same data location (a domain links only within its geography).
    locations = {template.canonical(get(d.value, "properties", "dataLocation") or d.node)
                 for d in (service, communication)}
    assert locations == {"dataLocation"}, locations
    assert template.canonical(template.outputs["endpoint"].value) == f"'https://${{{communication.name}.properties.hostName}}'"
    assert template.canonical(template.outputs["senderAddress"].value) == \
        f"'DoNotReply@${{{domain.name}.properties.mailFromSenderDomain}}'"


def test_the_email_role_is_the_documented_send_role_on_the_communication_service() -> None:
    template, definition = role_definition(EMAIL_ROLE)
    permissions = literal(template, get(definition.value, "properties", "permissions"), "permissions")
    assert len(permissions) == 1, permissions
    actions = permissions[0]["actions"]
    assert len(actions) == len(set(actions)) and set(actions) == EMAIL_SENDER_ROLE_ACTIONS, actions
    for action in actions:
        lowered = action.lower()
        assert "*" not in action and "listkeys" not in lowered and "delete" not in lowered, action
        assert lowered.startswith("microsoft.communication/"), action
    assert not permissions[0].get("notActions") and not permissions[0].get("dataActions")
    scopes = get(definition.value, "properties", "assignableScopes")
    assert scopes is not None and template.canonical(scopes) == "[resourceGroup().id]"
    assignments = template.resources_of_type("Microsoft.Authorization/roleAssignments")
    assert len(assignments) == 1, assignments
    assignment, _ = template.instances(assignments[0])[0]
    target = _scope_resource(template, assignment)
    assert (target.type_string or "").startswith("Microsoft.Communication/communicationServices@"), target.name
    role = get(assignment, "properties", "roleDefinitionId")
    assert role is not None and template.canonical(role) == \
        f"subscriptionResourceId('Microsoft.Authorization/roleDefinitions',{definition.name}.name)"
    principal = get(assignment, "properties", "principalId")
    assert principal is not None and text(principal) == "senderPrincipalId"
    roles = load(CUSTOM_ROLES)
    module = next(m for m in roles.modules.values() if m.type_string == "email-sender-role.bicep")
    instance, _ = roles.instances(module)[0]
    given = get(instance, "params", "senderPrincipalId")
    assert given is not None and text(given) == "principalId"


def test_email_settings_come_from_the_new_resources_or_the_existing_ones() -> None:
    main = load(MAIN)
    groups = [alternative for alternative in main.values(main.variables["outputAppSettings"].value)
              if "MAINTENANCE_EMAIL_ENDPOINT" in alternative]
    assert groups
    seen: dict[str, set[str]] = {"MAINTENANCE_EMAIL_ENDPOINT": set(), "MAINTENANCE_EMAIL_SENDER": set(),
                                 "MAINTENANCE_EMAIL_TO": set()}
    for alternative in groups:
        for name in seen:
            assert isinstance(alternative[name], Opaque), f"{name} = {alternative[name]!r}"
            seen[name].add(alternative[name].text)
    # (The email module is deployed exactly when its outputs are read: see the test after the next.)
    assert seen == {
        "MAINTENANCE_EMAIL_ENDPOINT": {"existingEmailEndpoint", "email.outputs.endpoint"},
        "MAINTENANCE_EMAIL_SENDER": {"existingEmailSender", "email.outputs.senderAddress"},
        "MAINTENANCE_EMAIL_TO": {"emailRecipients"},
    }, seen


def test_the_teams_url_and_the_hold_key_reach_the_app_only_as_key_vault_references() -> None:
    from handlers.core.output_settings import APPROVAL_MODES

    main = load(MAIN)
    vault_module = _main_module("app/key-vault.bicep")
    body, _ = main.instances(vault_module)[0]
    name_node = get(body, "params", "name")
    assert name_node is not None
    vault_name = single(sorted(set(main.values(name_node))), "vault name")
    entries = {"MAINTENANCE_TEAMS_WEBHOOK_URL": literal(main, get(body, "params", "teamsWebhookEntryName"), "entry"),
               "MAINTENANCE_HOLD_KEY": literal(main, get(body, "params", "holdKeyEntryName"), "entry")}
    seen: dict[str, set[str]] = {name: set() for name in KEY_VAULT_REFERENCE_SETTINGS}
    for alternative in main.values(main.variables["outputAppSettings"].value):
        assert isinstance(alternative, dict), alternative
        for name in KEY_VAULT_REFERENCE_SETTINGS & set(alternative):
            value = alternative[name]
            match = KEY_VAULT_REFERENCE.fullmatch(value) if isinstance(value, str) else None
            assert match, f"{name} is not a Key Vault reference: {value!r}"
            # https://<the vault this deployment creates><the cloud's Key Vault DNS suffix>/
            assert match["host"] == f"{vault_name}${{environment().suffixes.keyvaultDns}}", match["host"]
            seen[name].add(match["entry"])
        if "MAINTENANCE_APPROVAL_MODE" in alternative:
            assert alternative["MAINTENANCE_APPROVAL_MODE"] == Opaque("approvalMode")
    assert seen == {name: {entry} for name, entry in entries.items()}, seen
    allowed = main.params["approvalMode"].decorator("allowed")
    assert allowed is not None and tuple(literal(main, call_arguments(allowed)[0], "allowed")) == APPROVAL_MODES
    # Nothing else sets them: not the always-on settings, not the host settings.
    assert not KEY_VAULT_REFERENCE_SETTINGS & set(properties(main.variables["appSettings"].value))
    template, _ = _function_app()
    config = next(d for d in template.resources.values() if d.type_string == "config")
    host = call_arguments(get(config.value, "properties") or config.node)[0]
    assert not KEY_VAULT_REFERENCE_SETTINGS & set(single(template.values(host), "host settings"))
    # The values themselves, when given to the deployment: @secure() parameters that go to the vault
    # module only, which writes them into vault entries and nowhere else.
    for name in ("teamsWebhookUrl", "holdKey"):
        declaration = main.params[name]
        assert declaration.decorator("secure") is not None, f"main.bicep: {name} is not @secure()"
        assert evaluate(main, declaration.value) == "", f"main.bicep: {name} has a default"
        uses = [n for n in walk(main.root) if n.type == "identifier" and text(n) == name
                and not same(n, named(declaration.node)[0])]
        assert uses, name
        for use in uses:
            holder = use.parent
            assert holder is not None and holder.type == "object_property" and property_key(holder) == name \
                and _is_inside(use, vault_module.node), \
                f"main.bicep:{use.start_point[0] + 1}: {name} is used outside the vault module"
    vault_template = load(KEY_VAULT)
    entry_resources = vault_template.resources_of_type(KEY_VAULT_ENTRY_TYPE)
    for name in ("teamsWebhookUrl", "holdKey"):
        declaration = vault_template.params[name]
        assert declaration.decorator("secure") is not None, f"key-vault.bicep: {name} is not @secure()"
        uses = [n for n in walk(vault_template.root) if n.type == "identifier" and text(n) == name
                and not same(n, named(declaration.node)[0])]
        assert uses and all(any(_is_inside(use, entry.node) for entry in entry_resources) for use in uses), \
            f"key-vault.bicep: {name} is used outside its vault entry"
    written = {}
    for entry in entry_resources:
        body, _ = vault_template.instances(entry)[0]
        value = get(body, "properties", "value")
        assert value is not None and text(value) in ("teamsWebhookUrl", "holdKey"), entry.name
        written[text(get(body, "name") or body)] = text(value)
        # Written only when given: an empty value would replace what the operator put there.
        assert entry.value.type == "if_statement", f"key-vault.bicep: {entry.name} is written unconditionally"
        assert vault_template.canonical(named(entry.value)[0]) == f"(!empty({text(value)}))", text(entry.value)
    assert written == {"teamsWebhookEntryName": "teamsWebhookUrl", "holdKeyEntryName": "holdKey"}, written
    assert not any(text(n) in ("teamsWebhookUrl", "holdKey") for output in vault_template.outputs.values()
                   for n in walk(output.node) if n.type == "identifier")


def test_the_key_vault_is_rbac_only_with_soft_delete_and_the_app_reads_it_with_its_identity() -> None:
    template = load(KEY_VAULT)
    vaults = template.resources_of_type("Microsoft.KeyVault/vaults")
    assert len(vaults) == 1, vaults
    vault = vaults[0]
    props = get(vault.value, "properties")
    assert literal(template, get(props, "enableRbacAuthorization"), "enableRbacAuthorization") is True
    assert literal(template, get(props, "enableSoftDelete"), "enableSoftDelete") is True
    assert 7 <= literal(template, get(props, "softDeleteRetentionInDays"), "retention") <= 90
    assert get(props, "accessPolicies") is None, "RBAC mode: no access policies"
    purge = get(props, "enablePurgeProtection")
    assert purge is not None and template.canonical(purge) == "enablePurgeProtection?true:null", text(vault.node)
    assignments = template.resources_of_type("Microsoft.Authorization/roleAssignments")
    assert len(assignments) == 1, assignments
    assignment = assignments[0].value
    assert _scope_resource(template, assignment).name == vault.name
    assert _role_of(template, assignment) == "Key Vault Secrets User"
    principal = get(assignment, "properties", "principalId")
    assert principal is not None and text(principal) == "readerPrincipalId"
    main = load(MAIN)
    module = _main_module("app/key-vault.bicep")
    instance, _ = main.instances(module)[0]
    given = get(instance, "params", "readerPrincipalId")
    assert given is not None and text(given) == "identity.outputs.principalId"
    given = get(instance, "params", "enablePurgeProtection")
    assert given is not None and text(given) == "keyVaultPurgeProtection"
    # The site resolves references with the user-assigned identity (it has no system-assigned one),
    # and is created after the vault and the app's role on it.
    site_template, site = _function_app()
    identity = get(site.value, "properties", "keyVaultReferenceIdentity")
    assert identity is not None and site_template.canonical(identity) == "resolveKeyVaultReferences?identityId:null"
    identities = get(site.value, "identity", "userAssignedIdentities")
    assert identities is not None and site_template.canonical(identities) == "{'${identityId}':{}}"
    depends = get(_function_app_module_body(), "dependsOn")
    assert depends is not None and "keyVault" in {text(n) for n in named(depends)}, "the app must wait for the vault"
    # The vault the references point to is the one this module creates (its name), in this cloud.
    reference_uri = main.variables["keyVaultUri"].value
    assert single(sorted(set(main.values(reference_uri))), "keyVaultUri") == \
        f"https://{single(sorted(set(main.values(get(instance, 'params', 'name') or instance))), 'name')}" \
        "${environment().suffixes.keyvaultDns}/"


def test_outputs_of_conditional_modules_are_read_only_where_the_module_is_deployed() -> None:
    # ARM evaluates only the branch a ternary takes, so `condition ? module.outputs.x : ...` is safe
    # exactly when the condition is the module's own.
    main = load(MAIN)
    conditional = {name: module for name, module in main.modules.items() if module.value.type == "if_statement"}
    checked = 0
    for node in walk(main.root):
        chain = member_chain(node)
        if not chain or len(chain) < 3 or chain[0] not in conditional or chain[1] != "outputs":
            continue
        if node.parent is not None and node.parent.type == "member_expression":
            continue  # the whole chain is checked once
        module_condition = main.canonical(named(_module_condition(conditional[chain[0]]))[0])
        guard: Node | None = node.parent
        child = node
        while guard is not None and not (guard.type == "ternary_expression" and same(named(guard)[1], child)):
            child = guard
            guard = guard.parent
        assert guard is not None, f"main.bicep:{node.start_point[0] + 1}: {text(node)} is read unguarded"
        assert main.canonical(named(guard)[0]) == module_condition, \
            f"main.bicep:{node.start_point[0] + 1}: {text(node)} is read when {text(named(guard)[0])}, " \
            f"the module exists when {module_condition}"
        checked += 1
    assert checked >= 5, checked


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
    # (`:?` refuses an unset or empty variable; `?` an unset one: an empty id means "none".)
    required_env = set(re.findall(r"\$\{(\w+):?\?", script))
    assert set(passed.values()) <= required_env, "every variable the hook passes is checked first"
    assert required_env <= outputs, f"the hook needs {sorted(required_env - outputs)}, which main.bicep does not output"
    # subscriptions.bicep is the same module main.bicep uses on a second pass.
    module_paths = {m.type_string for m in subscriptions.modules.values()}
    assert module_paths == {"app/event-subscriptions.bicep", "app/custom-roles.bicep"}
