// The app identity's roles on one target resource group (machines, disks or snapshots there): the
// same roles as target-subscription-roles.bicep, at a narrower scope (README, "Roles"):
// - Reader (built-in): Resource Graph (the machines of a run, their power states, disks, tags,
//   patch results) and instance views. Resource Graph shows only what the identity can read, so
//   without it a run finds no machines rather than failing. Reader writes and acts on nothing.
// - Maintenance machine operator (custom, the actions in roles/machine-operator.json): start,
//   deallocate and power off VMs, merge tags on machines (the Tags API), and with snapshots on,
//   create and delete snapshots. It replaces Virtual Machine Contributor (which also deletes VMs,
//   resets their passwords and runs commands on them), Tag Contributor and Disk Snapshot
//   Contributor (which also lists the keys of every storage account in the subscription).
//
// One definition per resource group, assignable there only: its name is guid(subscription, group,
// fixed string) and its roleName carries both (role names are unique within a tenant).
//
// Replication: the definition is written on the first pass and assigned on the second (assign,
// see infra/README.md, "Custom roles and replication"): by then it has replicated, and no run can
// arrive before the second pass, which creates the event subscriptions.
@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Also grant creating and deleting snapshots (MAINTENANCE_SNAPSHOT_DISKS is not none).')
param includeSnapshotActions bool

@description('Assign the custom role (the second pass). false: write its definition only.')
param assign bool

var readerRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'acdd72a7-3385-48ef-bd42-f606fba81ae7')
var operator = loadJsonContent('roles/machine-operator.json')

resource readerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, readerRoleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: readerRoleDefinitionId
  }
}

resource operatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, resourceGroup().id, 'maintenance-machine-operator')
  properties: {
    roleName: 'Maintenance machine operator (${subscription().subscriptionId}/${resourceGroup().name})'
    description: 'Start, deallocate and power off virtual machines, merge tags on machines, and (with snapshots on) create and delete disk snapshots: what the Update Manager maintenance toolkit changes on the machines of a run.'
    type: 'CustomRole'
    permissions: [
      {
        actions: includeSnapshotActions ? concat(operator.actions, operator.snapshotActions) : operator.actions
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

var operatorRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', operatorRole.name)

resource operatorAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assign) {
  name: guid(resourceGroup().id, principalId, operatorRoleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: operatorRoleDefinitionId
    description: 'Machines of the Update Manager maintenance toolkit: start, stop, tags, snapshots.'
  }
}
