// The app's storage account: Functions host storage, the Flex Consumption deployment container,
// the run ledger (Table), the work and events queues (with their -poison queues, which the host
// would otherwise create on first failure), the Event Grid dead-letter container, the run reports' container
// and the hand-offs' container (its blobs deleted a day after they were written).
// Shared-key access is off: every client (host, app, Event Grid) authenticates with Entra ID.
// With publicNetworkAccess Disabled the public endpoint is closed: the app then reaches the account
// through its VNet integration and private endpoints the estate's network provides (infra/README.md),
// and Event Grid, a trusted service writing with its managed identity, through the AzureServices bypass.

@description('Storage account name: 3-24 lower-case letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the storage account.')
param location string

@description('Tags for the storage account.')
param tags object

@description('Blob container the Flex Consumption platform deploys the app package from.')
param deploymentContainerName string

@description('Blob container Event Grid dead-letters undeliverable events to.')
param deadLetterContainerName string

@description('Blob container the run reports are written to (MAINTENANCE_REPORT_CONTAINER).')
param reportContainerName string

@description('Blob container of what a split run\'s coordinator hands its groups (MAINTENANCE_HANDOFF_CONTAINER).')
param handoffContainerName string

@description('Queues to create (work, events and their -poison queues).')
param queueNames array

@description('Table of the run ledger (MAINTENANCE_LEDGER_TABLE).')
param ledgerTableName string

@description('Enabled: the public endpoint takes requests from any network (Entra ID still required). Disabled: private endpoints and trusted Azure services only.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string

// The firewall's default for the public endpoint; the AzureServices bypass stays either way, so the
// Event Grid system topic (a trusted service, with its identity) can dead-letter and deliver to the
// queue when the account is closed: the storage documentation says trusted-service exceptions stay
// in effect with publicNetworkAccess Disabled (Azure Storage network security overview,
// Restrictions and considerations). A lookup, not a ternary: the properties stay one value for the
// static checks in tests/infra.
var networkDefaultAction = {
  Enabled: 'Allow'
  Disabled: 'Deny'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction[publicNetworkAccess]
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource reportContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: reportContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource handoffContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: handoffContainerName
  properties: {
    publicAccess: 'None'
  }
}

// A hand-off lives for the minutes of one pre phase and the run's verdict deletes it; this rule
// removes one the verdict could not (storage failing then), a day later.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-handoffs'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${handoffContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: 1
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    handoffContainer
  ]
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

output id string = storage.id
output name string = storage.name
output deploymentContainerName string = deploymentContainer.name
output deadLetterContainerName string = deadLetterContainer.name
