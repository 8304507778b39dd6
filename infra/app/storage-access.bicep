// Data-plane roles on the app's storage account (shared keys are off, so these are the only way in).
// - the app's identity: Blob Data Owner (Functions host storage and the Flex Consumption deployment
//   container), Queue Data Contributor (work and events queues, -poison queues), Table Data
//   Contributor (the run ledger);
// - the Event Grid system topic's identity: Blob Data Contributor on the dead-letter container
//   only, and Queue Data Message Sender on the events queue only when events are delivered there
//   instead of to the functions. Nothing else: not the deployment package's container, the
//   reports, the ledger or the work queue.
// Principal ids arrive as module parameters so each assignment name is known when the deployment
// starts, as Resource Manager requires of a name.

@description('Name of the app storage account (in this resource group).')
param storageAccountName string

@description('Principal (object) id of the app\'s user-assigned identity.')
param appPrincipalId string

@description('Principal (object) id of the Event Grid system topic\'s system-assigned identity.')
param topicPrincipalId string

@description('Blob container (in that account) Event Grid dead-letters to: the topic\'s only blob scope.')
param deadLetterContainerName string

@description('Queue (in that account) Event Grid delivers to in queue mode: the topic\'s only queue scope.')
param eventsQueueName string

@description('function: Event Grid calls the functions; queue: Event Grid writes to the events queue.')
@allowed([
  'function'
  'queue'
])
param deliveryMode string

var roleIds = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
}

var appRoleIds = [
  roleIds.storageBlobDataOwner
  roleIds.storageQueueDataContributor
  roleIds.storageTableDataContributor
]

var deadLetterRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
var queueSenderRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataMessageSender)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource eventsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: eventsQueueName
}

resource appRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in appRoleIds: {
  name: guid(storage.id, appPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId))
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]

resource topicDeadLetterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topicPrincipalId, deadLetterRoleDefinitionId)
  scope: deadLetterContainer
  properties: {
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: deadLetterRoleDefinitionId
  }
}

resource topicQueueSenderRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (deliveryMode == 'queue') {
  name: guid(eventsQueue.id, topicPrincipalId, queueSenderRoleDefinitionId)
  scope: eventsQueue
  properties: {
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: queueSenderRoleDefinitionId
  }
}
