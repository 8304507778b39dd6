// E-mail of the run milestones through Azure Communication Services (azure-communication-email
// EmailClient(endpoint, credential) with the app's identity): an Email Communication Services
// resource with an Azure managed domain (sender DoNotReply@<guid>.azurecomm.net, no DNS to verify),
// a Communication Services resource linked to that domain with local auth (access keys) off, and a
// custom role with only what the ACS documentation lists for sending with a Microsoft Entra identity
// (CommunicationServices read and write, EmailServices write), assigned to the app on that
// Communication Services resource. The built-in Communication and Email Service Owner would do it
// too, but it also manages both resources and reads their keys. See infra/README.md, "E-mail".

@description('Name of the Email Communication Services resource.')
param emailServiceName string

@description('Name of the Communication Services resource (the first label of its endpoint).')
param communicationServiceName string

@description('Where both resources keep their data at rest: a data location such as Europe, United States or UK, not an Azure region. The two must match for the domain to be linked.')
param dataLocation string

@description('Tags for the resources.')
param tags object

@description('Principal (object) id of the app\'s user-assigned identity, the sender.')
param senderPrincipalId string

resource emailService 'Microsoft.Communication/emailServices@2025-05-01' = {
  name: emailServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
  }
}

// An Azure managed domain must be named AzureManagedDomain.
resource domain 'Microsoft.Communication/emailServices/domains@2025-05-01' = {
  parent: emailService
  name: 'AzureManagedDomain'
  location: 'global'
  tags: tags
  properties: {
    domainManagement: 'AzureManaged'
    // No tracking pixels or rewritten links in operational mail.
    userEngagementTracking: 'Disabled'
  }
}

resource communicationService 'Microsoft.Communication/communicationServices@2025-05-01' = {
  name: communicationServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
    linkedDomains: [
      domain.id
    ]
    disableLocalAuth: true
  }
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

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(communicationService.id, senderPrincipalId, senderRoleDefinitionId)
  scope: communicationService
  properties: {
    principalId: senderPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: senderRoleDefinitionId
  }
}

output communicationServiceName string = communicationService.name
output communicationServiceId string = communicationService.id
output endpoint string = 'https://${communicationService.properties.hostName}'
output senderAddress string = 'DoNotReply@${domain.properties.mailFromSenderDomain}'
