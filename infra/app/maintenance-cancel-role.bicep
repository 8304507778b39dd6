// Least privilege to cancel a run: a custom role with only what the cancel request needs
// (PUT {configuration}/providers/Microsoft.Maintenance/applyUpdates/{run} {"status": "Cancel"}: the
// app never reads the run or the configuration through ARM),
// assigned to the app identity on the maintenance configuration itself. Contributor would do it
// too; Scheduled Patching Contributor and Virtual Machine Contributor would not.
// Deployed into the configuration's resource group; the role is assignable there only.

@description('Name of the maintenance configuration (in this resource group).')
param maintenanceConfigurationName string

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Assign the role (the second pass). false: write its definition only (infra/README.md, "Custom roles and replication").')
param assign bool

resource configuration 'Microsoft.Maintenance/maintenanceConfigurations@2023-04-01' existing = {
  name: maintenanceConfigurationName
}

resource cancelRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, resourceGroup().id, 'maintenance-run-canceller')
  properties: {
    roleName: 'Maintenance run canceller (${subscription().subscriptionId}/${resourceGroup().name})'
    description: 'Cancel a run (applyUpdates) of a maintenance configuration. Used by the Update Manager maintenance toolkit.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Maintenance/applyUpdates/write'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

var cancelRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cancelRole.name)

resource cancelRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assign) {
  name: guid(configuration.id, principalId, cancelRoleDefinitionId)
  scope: configuration
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: cancelRoleDefinitionId
  }
}

output roleDefinitionId string = cancelRoleDefinitionId
