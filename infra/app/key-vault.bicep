// The toolkit's Key Vault: where the Teams Workflows webhook URL (its signature is in it) and the
// key that signs the hold/approve links live. The app never gets the values as plain settings:
// MAINTENANCE_TEAMS_WEBHOOK_URL and MAINTENANCE_HOLD_KEY are Key Vault references, which App Service
// resolves with the app's user-assigned identity (Key Vault Secrets User on this vault only).
// RBAC mode (no access policies), soft delete on. The values are put here by the operator
// (infra/README.md), or by this module when main.bicep is given them as @secure() parameters.

@description('Name of the vault (3-24 characters, globally unique).')
param name string

@description('Region of the vault.')
param location string

@description('Tags for the vault.')
param tags object

@description('Principal (object) id of the app\'s user-assigned identity, which resolves the Key Vault references.')
param readerPrincipalId string

@description('Purge protection: a deleted vault, and its name, are kept for the whole retention period. It cannot be turned off again.')
param enablePurgeProtection bool

@description('Name of the entry holding the Teams Workflows webhook URL.')
param teamsWebhookEntryName string

@description('Name of the entry holding the link-signing key.')
param holdKeyEntryName string

@secure()
@description('The Teams Workflows webhook URL. Empty: leave the entry as it is (the operator sets it).')
param teamsWebhookUrl string = ''

@secure()
@description('The link-signing key, base64 of at least 32 random bytes. Empty: leave the entry as it is (the operator sets it).')
param holdKey string = ''

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // The API refuses false once it was true, and false is the default: send true or nothing.
    enablePurgeProtection: enablePurgeProtection ? true : null
    // Flex Consumption without VNet integration resolves references over the public endpoint, from
    // no fixed address: the vault's lock is Entra ID and RBAC, not the network.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource teamsWebhook 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = if (!empty(teamsWebhookUrl)) {
  parent: vault
  name: teamsWebhookEntryName
  properties: {
    value: teamsWebhookUrl
    contentType: 'text/plain'
  }
}

resource holdKeyEntry 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = if (!empty(holdKey)) {
  parent: vault
  name: holdKeyEntryName
  properties: {
    value: holdKey
    contentType: 'text/plain'
  }
}

// Key Vault Secrets User: read the values, nothing else (no listing of keys or certificates, no writes).
var referenceReaderRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource referenceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, referenceReaderRoleDefinitionId)
  scope: vault
  properties: {
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: referenceReaderRoleDefinitionId
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
