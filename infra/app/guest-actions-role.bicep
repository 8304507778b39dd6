// Least privilege for in-guest actions (stop services before patching, start them after, operator
// scripts): a custom role with only what a managed Run Command needs, on Azure VMs and on
// Arc-enabled servers, assigned to the app identity on one target subscription. Virtual Machine
// Contributor holds the same run-command actions but also deletes VMs and resets passwords; the
// toolkit assigns it nowhere. custom-roles.bicep deploys this once per target subscription, only
// when enableGuestActions is true.
//
// One definition per subscription, shared by every toolkit deployment that targets it: its name
// is guid(subscription, fixed string) and its roleName carries the subscription id (role names
// are unique within a tenant), so two environments write the same definition instead of
// renaming it back and forth.
targetScope = 'subscription'

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Assign the role (the second pass). false: write its definition only.')
param assign bool

resource guestActionsRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'maintenance-guest-actions')
  properties: {
    roleName: 'Maintenance guest actions (${subscription().subscriptionId})'
    description: 'Create, read and delete managed Run Commands on virtual machines and Arc-enabled servers, and read Arc-enabled servers: the in-guest actions (stop and start services, operator scripts) of the Update Manager maintenance toolkit.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Compute/virtualMachines/runCommands/read'
          'Microsoft.Compute/virtualMachines/runCommands/write'
          'Microsoft.Compute/virtualMachines/runCommands/delete'
          'Microsoft.HybridCompute/machines/read'
          'Microsoft.HybridCompute/machines/runCommands/read'
          'Microsoft.HybridCompute/machines/runCommands/write'
          'Microsoft.HybridCompute/machines/runCommands/delete'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

// Replication: the definition is written on the first pass and assigned on the second (assign,
// see infra/README.md, "Custom roles and replication"). Referring to the definition's symbol still
// orders the two within a pass. (principalType lets the assignment of a just-created identity skip
// the directory lookup that fails with PrincipalNotFound while the identity replicates.)
var guestActionsRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', guestActionsRole.name)

resource guestActionsAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assign) {
  name: guid(subscription().id, principalId, guestActionsRoleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: guestActionsRoleId
    description: 'In-guest actions of the Update Manager maintenance toolkit (managed Run Commands).'
  }
}

output roleDefinitionId string = guestActionsRoleId
