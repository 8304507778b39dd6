// E-mail of the run milestones through Azure Communication Services (azure-communication-email
// EmailClient(endpoint, credential) with the app's identity): an Email Communication Services
// resource with an Azure managed domain (sender DoNotReply@<guid>.azurecomm.net, no DNS to verify),
// and a Communication Services resource linked to that domain with local auth (access keys) off.
// The app's role on it is email-sender-role.bicep's. See infra/README.md, "E-mail".

@description('Name of the Email Communication Services resource.')
param emailServiceName string

@description('Name of the Communication Services resource (the first label of its endpoint).')
param communicationServiceName string

@description('Where both resources keep their data at rest: a data location such as Europe, United States or UK, not an Azure region. The two must match for the domain to be linked.')
param dataLocation string

@description('Tags for the resources.')
param tags object

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

output communicationServiceName string = communicationService.name
output communicationServiceId string = communicationService.id
output endpoint string = 'https://${communicationService.properties.hostName}'
output senderAddress string = 'DoNotReply@${domain.properties.mailFromSenderDomain}'
