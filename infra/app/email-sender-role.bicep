// The app's right to send e-mail through the toolkit's Communication Services resource
// (email.bicep): a custom role with only what the ACS documentation lists for sending with a
// Microsoft Entra identity (CommunicationServices read and write, EmailServices write), assigned
// to the app on that resource. The built-in Communication and Email Service Owner would do it too,
// but it also manages both resources and reads their keys. Deployed into the resource's group.
//
// Replication: the definition is written on the first pass and assigned on the second (assign,
// see infra/README.md, "Custom roles and replication").

@description('Name of the Communication Services resource (in this resource group).')
param communicationServiceName string

@description('Principal (object) id of the app\'s user-assigned identity, the sender.')
param senderPrincipalId string

@description('Assign the role (the second pass). false: write its definition only.')
param assign bool

resource communicationService 'Microsoft.Communication/communicationServices@2025-05-01' existing = {
  name: communicationServiceName
}

resource senderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, resourceGroup().id, 'maintenance-email-sender')
  properties: {
    roleName: 'Maintenance e-mail sender (${subscription().subscriptionId}/${resourceGroup().name})'
    description: 'Send e-mail through a Communication Services resource with a Microsoft Entra identity (the custom email role of the Azure Communication Services documentation). Used by the Update Manager maintenance toolkit.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Communication/CommunicationServices/Read'
          'Microsoft.Communication/CommunicationServices/Write'
          'Microsoft.Communication/EmailServices/write'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

var senderRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', senderRole.name)

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assign) {
  name: guid(communicationService.id, senderPrincipalId, senderRoleDefinitionId)
  scope: communicationService
  properties: {
    principalId: senderPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: senderRoleDefinitionId
  }
}
