// The app's user-assigned managed identity. User-assigned rather than system-assigned: it exists
// before the Function App, so every role assignment (storage, App Insights, targets, the cancel
// role) can be made in the same deployment, and it survives the app being recreated.

@description('Name of the user-assigned managed identity.')
param name string

@description('Region of the identity.')
param location string

@description('Tags for the identity.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
