"""Details of a production deployment, checked on the parsed templates: the Event Grid topic's
storage roles reach only what it writes to, the storage account can be closed (with the subnet that
then becomes necessary), an adopted system topic keeps its user-assigned identities, azd is recent
enough for azure.yaml, and a new schedule's start is fixed once instead of moving with every
deployment (the preprovision hook, run here with a stand-in `azd`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
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
    get,
    load,
    named,
    properties,
    string_literal,
    templates,
    text,
    walk,
)

MAIN = INFRA / "main.bicep"
PARAMETERS = INFRA / "main.parameters.json"
AZURE_YAML = ROOT / "azure.yaml"
STORAGE = INFRA / "app/storage.bicep"
STORAGE_ACCESS = INFRA / "app/storage-access.bicep"
FUNCTION_APP = INFRA / "app/function-app.bicep"
TOPIC = INFRA / "app/event-grid-topic.bicep"
EXISTING_TOPIC = INFRA / "app/existing-topic-identity.bicep"
SUBNET_CHECK = INFRA / "app/closed-storage-needs-subnet.bicep"
CONFIGURATION = INFRA / "app/maintenance-configuration.bicep"
PREPROVISION = ROOT / "infra/hooks/preprovision.sh"

CONTAINER_TYPE = "Microsoft.Storage/storageAccounts/blobServices/containers"
QUEUE_TYPE = "Microsoft.Storage/storageAccounts/queueServices/queues"
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
QUEUE_DATA_MESSAGE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"


def main_module(path: str) -> Declaration:
    main = load(MAIN)
    modules = [m for m in main.modules.values() if m.type_string == path]
    assert len(modules) == 1, f"main.bicep deploys {path} {len(modules)} times"
    return modules[0]


def module_param(path: str, name: str) -> Node:
    body, _ = load(MAIN).instances(main_module(path))[0]
    node = get(body, "params", name)
    assert node is not None, f"main.bicep passes {path} no {name}"
    return node


def condition(declaration: Declaration) -> str:
    """The canonical text of a conditional module's `if (...)`, variables substituted."""
    assert declaration.value.type == "if_statement", f"{declaration.name} is not conditional"
    return load(MAIN).canonical(named(named(declaration.value)[0])[0])


def decorator_argument(declaration: Declaration, name: str) -> Any:
    call = declaration.decorator(name)
    assert call is not None, f"{declaration.name} has no @{name}()"
    (argument,) = call_arguments(call)
    return int(text(argument)) if argument.type == "number" else string_literal(argument)


def description(declaration: Declaration) -> str:
    value = decorator_argument(declaration, "description")
    assert isinstance(value, str)
    return value


def allowed(declaration: Declaration) -> list[Any]:
    call = declaration.decorator("allowed")
    assert call is not None, f"{declaration.name} has no @allowed()"
    (values,) = call_arguments(call)
    return [string_literal(item) for item in named(values)]


def azd_parameter(name: str) -> str:
    value: str = json.loads(PARAMETERS.read_text())["parameters"][name]["value"]
    return value


def topic_assignments() -> list[tuple[Declaration, Node]]:
    """The role assignments storage-access.bicep gives the system topic's identity."""
    template = load(STORAGE_ACCESS)
    found = []
    for declaration in template.resources_of_type("Microsoft.Authorization/roleAssignments"):
        for body, env in template.instances(declaration):
            principal = get(body, "properties", "principalId")
            if principal is not None and template.canonical(principal, env) == "topicPrincipalId":
                found.append((declaration, body))
    return found


def role_of(template: Template, body: Node) -> str:
    role = get(body, "properties", "roleDefinitionId")
    assert role is not None
    call = template.resolve(role)
    assert call_name(call) == "subscriptionResourceId", text(call)
    value = template.values(call_arguments(call)[1])
    assert len(value) == 1 and isinstance(value[0], str), value
    return value[0]


def scoped_child(template: Template, body: Node, resource_type: str) -> Declaration:
    """The existing storage child resource a role assignment is scoped to, which must sit under the
    account through its 'default' service."""
    scope = get(body, "scope")
    assert scope is not None and scope.type == "identifier", "the assignment has no resource scope"
    child = template.resources.get(text(scope))
    assert child is not None, f"scope {text(scope)} is not a resource of {template.relative}"
    assert child.is_existing and (child.type_string or "").split("@")[0] == resource_type, child.type_string
    parent = template.resources[text(get(child.value, "parent") or child.value)]
    assert parent.is_existing and string_literal(get(parent.value, "name") or parent.value) == "default"
    account = template.resources[text(get(parent.value, "parent") or parent.value)]
    assert account.is_existing and text(get(account.value, "name") or account.value) == "storageAccountName"
    name = get(body, "name")
    assert name is not None and call_name(name) == "guid"
    assert template.canonical(call_arguments(name)[0]) == f"{child.name}.id", "guid() does not start with the scope"
    return child


# ------------------------------------------------------------------------------------------------
# 1. The topic's storage roles


def test_the_topic_dead_letters_with_blob_data_contributor_on_the_dead_letter_container_only() -> None:
    template = load(STORAGE_ACCESS)
    blob_roles = [(d, b) for d, b in topic_assignments() if role_of(template, b) == BLOB_DATA_CONTRIBUTOR]
    assert len(blob_roles) == 1, blob_roles
    declaration, body = blob_roles[0]
    container = scoped_child(template, body, CONTAINER_TYPE)
    assert text(get(container.value, "name") or container.value) == "deadLetterContainerName"
    # main.bicep passes the container storage.bicep created as the dead-letter one: `deadletter`.
    given = module_param("app/storage-access.bicep", "deadLetterContainerName")
    assert text(given) == "storage.outputs.deadLetterContainerName"
    storage = load(STORAGE)
    output = storage.outputs["deadLetterContainerName"].value
    assert text(output) == "deadLetterContainer.name"
    main = load(MAIN)
    assert main.values(module_param("app/storage.bicep", "deadLetterContainerName")) == ["deadletter"]
    assert main.values(module_param("app/event-subscriptions.bicep", "deadLetterContainerName")) == [
        Opaque("storage.outputs.deadLetterContainerName")]


def test_the_topic_sends_to_the_events_queue_only_and_only_in_queue_mode() -> None:
    template = load(STORAGE_ACCESS)
    queue_roles = [(d, b) for d, b in topic_assignments() if role_of(template, b) == QUEUE_DATA_MESSAGE_SENDER]
    assert len(queue_roles) == 1, queue_roles
    declaration, body = queue_roles[0]
    assert declaration.value.type == "if_statement"
    assert template.canonical(named(named(declaration.value)[0])[0]) == "deliveryMode=='queue'"
    queue = scoped_child(template, body, QUEUE_TYPE)
    assert text(get(queue.value, "name") or queue.value) == "eventsQueueName"
    main = load(MAIN)
    assert main.values(module_param("app/storage-access.bicep", "eventsQueueName")) == ["maintenance-events"]


def test_the_topic_has_no_role_on_the_whole_account() -> None:
    assignments = topic_assignments()
    assert len(assignments) == 2
    for declaration, body in assignments:
        scope = get(body, "scope")
        assert scope is not None and text(scope) != "storage", f"{declaration.name} is scoped to the account"


# ------------------------------------------------------------------------------------------------
# 2. Closed storage, VNet integration


def default_action(template: Template, node: Node, access: str) -> Any:
    """networkAcls.defaultAction for a value of publicNetworkAccess: a lookup object indexed by
    the parameter."""
    assert node.type == "subscript_expression", f"defaultAction is not a lookup: {text(node)}"
    target, index = named(node)[0], named(node)[-1]
    assert text(index) == "publicNetworkAccess", text(index)
    (table,) = template.values(target)
    assert isinstance(table, dict), table
    return table[access]


def test_storage_public_network_access_is_a_parameter_on_by_default() -> None:
    main = load(MAIN)
    param = main.params["storagePublicNetworkAccess"]
    assert allowed(param) == ["Enabled", "Disabled"]
    assert main.values(param.value) == ["Enabled"]
    assert "Disabled" in description(param) and "functionAppSubnetId" in description(param)
    assert text(module_param("app/storage.bicep", "publicNetworkAccess")) == "storagePublicNetworkAccess"
    assert azd_parameter("storagePublicNetworkAccess") == "${STORAGE_PUBLIC_NETWORK_ACCESS=Enabled}"

    storage = load(STORAGE)
    assert allowed(storage.params["publicNetworkAccess"]) == ["Enabled", "Disabled"]
    (account,) = [d for d in storage.resources_of_type("Microsoft.Storage/storageAccounts") if not d.is_existing]
    props = get(account.value, "properties")
    assert text(get(props, "publicNetworkAccess") or props) == "publicNetworkAccess"
    # Event Grid dead-letters (and delivers to the queue) as a trusted service: the bypass stays.
    assert storage.values(get(props, "networkAcls", "bypass") or props) == ["AzureServices"]
    action = get(props, "networkAcls", "defaultAction")
    assert action is not None
    assert default_action(storage, action, "Enabled") == "Allow"
    assert default_action(storage, action, "Disabled") == "Deny"


def test_the_function_app_joins_a_subnet_only_when_one_is_given() -> None:
    main = load(MAIN)
    param = main.params["functionAppSubnetId"]
    assert main.values(param.value) == [""]
    assert "Microsoft.App/environments" in description(param)
    assert text(module_param("app/function-app.bicep", "virtualNetworkSubnetId")) == "functionAppSubnetId"
    assert azd_parameter("functionAppSubnetId") == "${FUNCTION_APP_SUBNET_ID=}"

    app = load(FUNCTION_APP)
    (site,) = [d for d in app.resources_of_type("Microsoft.Web/sites") if not d.is_existing]
    subnet = get(site.value, "properties", "virtualNetworkSubnetId")
    assert subnet is not None and subnet.type == "ternary_expression", "the site's virtualNetworkSubnetId"
    when, given, otherwise = named(subnet)
    assert app.canonical(when) == "empty(virtualNetworkSubnetId)"
    assert (app.values(given), app.values(otherwise)) == ([None], [Opaque("virtualNetworkSubnetId")])
    # Not inside functionAppConfig, where Flex Consumption takes only deployment, scale and runtime.
    config = get(site.value, "properties", "functionAppConfig")
    assert config is not None and "virtualNetworkSubnetId" not in properties(config)


def test_closed_storage_without_a_subnet_stops_the_deployment_before_the_account_is_closed() -> None:
    check = main_module("app/closed-storage-needs-subnet.bicep")
    assert condition(check) == "storagePublicNetworkAccess=='Disabled'"
    assert text(module_param("app/closed-storage-needs-subnet.bicep", "functionAppSubnetId")) == "functionAppSubnetId"
    target = load(SUBNET_CHECK)
    param = target.params["functionAppSubnetId"]
    assert not param.has_default and decorator_argument(param, "minLength") == 1
    assert not target.resources, "the check creates nothing"
    # The account waits for the check.
    body, _ = load(MAIN).instances(main_module("app/storage.bicep"))[0]
    depends = get(body, "dependsOn")
    assert depends is not None and check.name in {text(item) for item in named(depends)}


# ------------------------------------------------------------------------------------------------
# 3. Adopting an existing system topic


def test_an_adopted_topic_is_read_first_in_its_resource_group() -> None:
    main = load(MAIN)
    reader = main_module("app/existing-topic-identity.bicep")
    assert condition(reader) == "!empty(systemTopicName)"
    body, _ = main.instances(reader)[0]
    topic_body, _ = main.instances(main_module("app/event-grid-topic.bicep"))[0]
    assert main.canonical(get(body, "scope") or body) == main.canonical(get(topic_body, "scope") or topic_body)
    assert text(module_param("app/existing-topic-identity.bicep", "name")) == "systemTopicName"
    identities = module_param("app/event-grid-topic.bicep", "userAssignedIdentities")
    assert identities.type == "ternary_expression"
    when, adopted, new = named(identities)
    assert main.canonical(when) == "!empty(systemTopicName)"
    assert text(adopted) == f"{reader.name}.outputs.userAssignedIdentities"
    assert main.values(new) == [{}]
    assert "existing" in description(main.params["systemTopicName"])
    assert "must exist" in description(main.params["systemTopicName"])


def test_the_reader_outputs_the_topic_s_user_assigned_identities_safely() -> None:
    reader = load(EXISTING_TOPIC)
    (topic,) = reader.resources_of_type("Microsoft.EventGrid/systemTopics")
    assert topic.is_existing and text(get(topic.value, "name") or topic.value) == "name"
    output = reader.outputs["userAssignedIdentities"]
    assert text(named(output.node)[1]) == "object"
    # topic.?identity.?userAssignedIdentities ?? {}: a topic without identities yields {}, not an error.
    value = output.value
    assert value.type == "binary_expression" and text(value.children[1]) == "??", text(value)
    access, fallback = named(value)
    assert reader.values(fallback) == [{}]
    assert re.fullmatch(rf"{topic.name}\.\??identity\.\?userAssignedIdentities", text(access)), text(access)


def test_the_topic_writes_back_the_user_assigned_identities_beside_its_own() -> None:
    template = load(TOPIC)
    (topic,) = [d for d in template.resources_of_type("Microsoft.EventGrid/systemTopics") if not d.is_existing]
    identity = get(topic.value, "identity")
    assert identity is not None
    resolved = template.resolve(identity)
    assert resolved.type == "ternary_expression", text(resolved)
    when, new, adopted = named(resolved)
    assert template.canonical(when) == "empty(userAssignedIdentities)"
    assert template.values(new) == [{"type": "SystemAssigned"}]
    # The map as the reader found it (resource id -> principal and client id), beside the topic's own.
    assert template.values(adopted) == [
        {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": Opaque("userAssignedIdentities")}]
    assert not template.params["userAssignedIdentities"].has_default, "the caller decides"


# ------------------------------------------------------------------------------------------------
# 4. azd version


def azure_yaml() -> dict[str, Any]:
    document = yaml.safe_load(AZURE_YAML.read_text())
    assert isinstance(document, dict)
    return document


def test_azure_yaml_requires_the_azd_that_substitutes_arrays_and_builds_flex_remotely() -> None:
    document = azure_yaml()
    assert document.get("requiredVersions", {}).get("azd") == ">= 1.23.5"
    # The two reasons, in the file: 1.23.4's fix for array and object parameters, 1.23.5's remoteBuild.
    comments = "\n".join(line for line in AZURE_YAML.read_text().splitlines() if line.lstrip().startswith("#"))
    assert "6694" in comments and "remoteBuild" in comments
    assert document["services"]["api"]["remoteBuild"] is True
    assert azd_parameter("targetSubscriptionIds") == "${TARGET_SUBSCRIPTION_IDS=[]}"


# ------------------------------------------------------------------------------------------------
# 5. A schedule start that stays put


def test_no_template_computes_the_schedule_start_at_deployment_time() -> None:
    for template in templates():
        calls = [n for n in walk(template.root) if call_name(n) == "utcNow"]
        assert not calls, f"{template.relative} calls utcNow()"
    main = load(MAIN)
    assert "today" not in main.params
    assert text(module_param("app/maintenance-configuration.bicep", "startDateTime")) == "newConfigurationStartDateTime"
    start = description(main.params["newConfigurationStartDateTime"])
    assert "required when maintenanceConfigurationId is empty" in start


def test_a_new_configuration_needs_a_start_of_exactly_the_documented_form() -> None:
    param = load(CONFIGURATION).params["startDateTime"]
    assert not param.has_default
    assert decorator_argument(param, "minLength") == decorator_argument(param, "maxLength") == len("yyyy-MM-dd HH:mm")
    assert '"yyyy-MM-dd HH:mm"' in description(param)


def test_azure_yaml_runs_an_executable_posix_preprovision_hook() -> None:
    hook = azure_yaml().get("hooks", {}).get("preprovision")
    assert hook, "azure.yaml has no preprovision hook"
    posix = hook["posix"]
    assert posix["shell"] == "sh" and posix.get("continueOnError") is False
    assert ROOT / posix["run"] == PREPROVISION
    assert os.access(PREPROVISION, os.X_OK), f"{PREPROVISION} is not executable"
    assert PREPROVISION.read_text().startswith("#!/bin/sh\n")


def run_preprovision(tmp_path: Path, **environment: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Runs the hook as azd would, with a stand-in `azd` first on PATH that records its arguments."""
    calls = tmp_path / "azd-calls"
    fake = tmp_path / "azd"
    fake.write_text('#!/bin/sh\n(IFS="\t"; printf "%s\\n" "$*") >> "$AZD_CALLS"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "AZD_CALLS": str(calls), **environment}
    shell = shutil.which("sh")
    assert shell is not None, "no sh on PATH"
    result = subprocess.run([shell, str(PREPROVISION)], env=env, capture_output=True, text=True, timeout=30,
                            check=False)
    recorded = [line.split("\t") for line in calls.read_text().splitlines()] if calls.exists() else []
    return result, recorded


def tomorrow_at_22() -> str:
    return f"{(datetime.now(UTC) + timedelta(days=1)):%Y-%m-%d} 22:00"


def test_preprovision_fixes_tomorrow_22_00_when_neither_a_configuration_nor_a_start_is_given(tmp_path: Path) -> None:
    before = tomorrow_at_22()
    result, calls = run_preprovision(tmp_path, MAINTENANCE_CONFIGURATION_ID="", MAINTENANCE_WINDOW_START="")
    after = tomorrow_at_22()
    assert result.returncode == 0, result.stderr
    assert len(calls) == 1, calls
    assert calls[0][:3] == ["env", "set", "MAINTENANCE_WINDOW_START"] and calls[0][3] in {before, after}, calls
    assert len(calls[0]) == 4, "the start is one argument"
    # It says what it chose and how to choose another.
    assert calls[0][3] in result.stdout and 'azd env set MAINTENANCE_WINDOW_START "' in result.stdout


def test_preprovision_leaves_the_start_alone_for_an_existing_configuration(tmp_path: Path) -> None:
    configuration = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Maintenance/maintenanceConfigurations/mc"
    for start in ("", "not a date"):
        result, calls = run_preprovision(tmp_path, MAINTENANCE_CONFIGURATION_ID=configuration,
                                         MAINTENANCE_WINDOW_START=start)
        assert result.returncode == 0, result.stderr
        assert calls == []


def test_preprovision_keeps_a_valid_start(tmp_path: Path) -> None:
    result, calls = run_preprovision(tmp_path, MAINTENANCE_WINDOW_START="2030-01-06 21:30")
    assert result.returncode == 0, result.stderr
    assert calls == []


@pytest.mark.parametrize("start", ["2030-01-06", "2030-01-06T21:30", "2030-13-06 21:30", "2030-01-06 24:00",
                                   "06.01.2030 21:30", "2030-01-06 21:30 ", "2030-01-06 21:30\n2030-01-07 21:30"])
def test_preprovision_refuses_a_malformed_start_naming_the_variable_and_the_form(tmp_path: Path, start: str) -> None:
    result, calls = run_preprovision(tmp_path, MAINTENANCE_WINDOW_START=start)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "MAINTENANCE_WINDOW_START" in result.stderr and "yyyy-MM-dd HH:mm" in result.stderr
    assert calls == []


# ------------------------------------------------------------------------------------------------
# main.bicep's header


def test_main_bicep_header_names_the_python_the_app_runs() -> None:
    header = MAIN.read_text().split("\ntargetScope")[0]
    named_versions = set(re.findall(r"Python (\d+\.\d+)", header))
    app = load(FUNCTION_APP)
    (site,) = [d for d in app.resources_of_type("Microsoft.Web/sites") if not d.is_existing]
    runtime = app.values(get(site.value, "properties", "functionAppConfig", "runtime", "version") or site.value)
    assert named_versions == set(runtime) == {"3.12"}, (named_versions, runtime)
