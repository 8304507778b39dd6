"""Least privilege, against the code: every custom role of infra/ holds only actions that some step of
the pre or post phase declares it calls (`Step.permissions`, kept beside each step), and the actions
the steps call that Reader does not give are each in exactly one custom role. The assignments of
the custom roles come on the second pass only, after their definitions have replicated.
tests/functional/test_least_privilege.py runs whole maintenance runs with only these roles."""

from __future__ import annotations

import json
from typing import Any

from handlers.phases.guest import RUN_COMMANDS
from handlers.phases.post import STEPS as POST_STEPS
from handlers.phases.pre import STEPS as PRE_STEPS
from tests.infra.bicep_tree import INFRA, Template, call_arguments, call_name, get, load, named, string_literal, text

OPERATOR_ACTIONS_FILE = INFRA / "app/roles/machine-operator.json"
OPERATOR_ROLES = (INFRA / "app/target-subscription-roles.bicep", INFRA / "app/target-resource-group-roles.bicep")
CUSTOM_ROLES = INFRA / "app/custom-roles.bicep"
ROLE_FILES = {
    "cancel": INFRA / "app/maintenance-cancel-role.bicep",
    "guest": INFRA / "app/guest-actions-role.bicep",
    "email": INFRA / "app/email-sender-role.bicep",
}
CANCEL = "Microsoft.Maintenance/applyUpdates/write"


def step_actions() -> set[str]:
    return {action for step in (*PRE_STEPS, *POST_STEPS) for action in step.permissions}


def operator_json() -> dict[str, list[str]]:
    loaded: dict[str, list[str]] = json.loads(OPERATOR_ACTIONS_FILE.read_text())
    return loaded


def definition(template: Template) -> Any:
    (declaration,) = template.resources_of_type("Microsoft.Authorization/roleDefinitions")
    return declaration


def literal_actions(template: Template) -> set[str]:
    permissions = get(definition(template).value, "properties", "permissions")
    assert permissions is not None
    values = template.values(permissions)
    assert len(values) == 1 and len(values[0]) == 1, values
    actions: list[str] = values[0][0]["actions"]
    assert len(actions) == len(set(actions)), actions
    assert not values[0][0].get("notActions") and not values[0][0].get("dataActions")
    return set(actions)


def test_the_steps_declare_what_they_call_and_reader_gives_every_read() -> None:
    actions = step_actions()
    assert actions, "no step declares a permission"
    for action in actions:
        assert "*" not in action, f"a step declares a wildcard: {action}"
        assert action.count("/") >= 2 and action.split("/")[0].startswith("Microsoft."), action


def test_the_machine_operator_role_is_exactly_what_the_steps_change_on_machines() -> None:
    # What the steps call beyond reading, less what the guest-actions, cancel and e-mail roles give.
    others = set(RUN_COMMANDS) | {CANCEL} | {a for a in step_actions() if a.startswith("Microsoft.Communication/")}
    needed = {a for a in step_actions() if not a.lower().endswith("/read")} - others
    loaded = operator_json()
    assert set(loaded) == {"actions", "snapshotActions"}, set(loaded)
    granted = set(loaded["actions"]) | set(loaded["snapshotActions"])
    assert len(granted) == len(loaded["actions"]) + len(loaded["snapshotActions"]), "an action is listed twice"
    assert granted == needed, f"extra: {sorted(granted - needed)}; missing: {sorted(needed - granted)}"
    assert set(loaded["snapshotActions"]) == {a for a in needed if a.startswith("Microsoft.Compute/snapshots/")}
    for action in granted:
        lowered = action.lower()
        assert not lowered.endswith(("/delete", "/write")) or lowered.startswith(
            ("microsoft.compute/snapshots/", "microsoft.resources/tags/")), f"{action} changes a machine itself"


def test_both_operator_roles_load_the_one_list_and_add_snapshots_only_when_they_are_on() -> None:
    for path in OPERATOR_ROLES:
        template = load(path)
        loads = [v for v in template.variables.values() if call_name(v.value) == "loadJsonContent"]
        assert len(loads) == 1, f"{template.relative}: the actions come from roles/machine-operator.json"
        (argument,) = call_arguments(loads[0].value)
        assert string_literal(argument) == "roles/machine-operator.json"
        actions = get(definition(template).value, "properties", "permissions")
        assert actions is not None
        file = "loadJsonContent('roles/machine-operator.json')"  # (canonical() inlines the variable)
        assert f"includeSnapshotActions?concat({file}.actions,{file}.snapshotActions):{file}.actions" in \
            template.canonical(actions), template.canonical(actions)
        scopes = get(definition(template).value, "properties", "assignableScopes")
        expected = "[subscription().id]" if template.target_scope == "subscription" else "[resourceGroup().id]"
        assert scopes is not None and template.canonical(scopes) == expected


def test_every_custom_role_holds_only_actions_a_step_calls() -> None:
    calls = step_actions()
    for kind, path in ROLE_FILES.items():
        granted = literal_actions(load(path))
        assert granted <= calls, f"{kind} role: {sorted(granted - calls)} are called by no step"
    assert literal_actions(load(ROLE_FILES["cancel"])) == {CANCEL}
    assert literal_actions(load(ROLE_FILES["guest"])) == set(RUN_COMMANDS) | {"Microsoft.HybridCompute/machines/read"}


def test_targets_get_reader_on_the_first_pass_and_the_custom_roles_on_the_second() -> None:
    for path in (*OPERATOR_ROLES, *ROLE_FILES.values()):
        template = load(path)
        assert "assign" in template.params, f"{template.relative}: no assign parameter"
        for assignment in template.resources_of_type("Microsoft.Authorization/roleAssignments"):
            role = text(get(template.instances(assignment)[0][0], "properties", "roleDefinitionId") or assignment.node)
            conditional = assignment.value.type == "if_statement"
            if "acdd72a7" in text(template.resolve(get(template.instances(assignment)[0][0], "properties",
                                                        "roleDefinitionId") or assignment.node)):
                assert not conditional, f"{template.relative}: Reader is built in and needs no second pass"
                continue
            assert conditional and template.canonical(named(assignment.value)[0]) == "(assign)", \
                f"{template.relative}: the assignment of {role} must wait for the second pass"
        # The definition is written on both passes, unchanged.
        assert definition(template).value.type == "object", f"{template.relative}: the definition is conditional"


def test_the_first_pass_defines_the_second_assigns_through_the_same_module() -> None:
    roles = load(CUSTOM_ROLES)
    for module in roles.modules.values():
        body, _ = roles.instances(module)[0]
        given = get(body, "params", "assign")
        assert given is not None and text(given) == "assign", f"{module.name} does not pass assign on"
    used = {m.type_string for m in roles.modules.values()}
    assert used == {"maintenance-cancel-role.bicep", "target-subscription-roles.bicep",
                    "target-resource-group-roles.bicep", "guest-actions-role.bicep", "email-sender-role.bicep"}, used
    for path, expected in ((INFRA / "main.bicep", "deployEventSubscriptions"), (INFRA / "subscriptions.bicep", "true")):
        template = load(path)
        (module,) = [m for m in template.modules.values() if m.type_string == "app/custom-roles.bicep"]
        body, _ = template.instances(module)[0]
        given = get(body, "params", "assign")
        assert given is not None and text(given) == expected, f"{template.relative}: assign is {given and text(given)}"
        # Every target and feature flag reaches the module on both passes.
        for param in ("principalId", "maintenanceConfigurationName", "targetSubscriptionIds", "targetResourceGroupIds",
                      "includeSnapshotActions", "enableGuestActions", "communicationServiceId"):
            assert get(body, "params", param) is not None, f"{template.relative}: {param} not passed"
