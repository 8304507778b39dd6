// The Event Grid custom topic the app publishes run milestones to (MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT),
// as CloudEvents 1.0: azure-eventgrid's EventGridPublisherClient with azure.core.messaging.CloudEvent,
// authenticated with the app's identity. Local auth (SAS keys) is off, so the identity's role on
// this topic (EventGrid Data Sender, nothing wider) is the only way to publish.
// Who reads the events is up to the operator: event subscriptions on this topic are not created here.

@description('Name of the custom topic.')
param name string

@description('Region of the topic.')
param location string

@description('Tags for the topic.')
param tags object

@description('Principal (object) id of the app\'s user-assigned identity, the only publisher.')
param publisherPrincipalId string

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  // For subscriptions the operator adds that deliver or dead-letter with the topic's identity; it
  // has no role until one is given.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

// EventGrid Data Sender: publish events to the topic, nothing else.
var dataSenderRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'd5a91429-5739-47e2-a06b-3470a27159e7')

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, publisherPrincipalId, dataSenderRoleDefinitionId)
  scope: topic
  properties: {
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: dataSenderRoleDefinitionId
  }
}

output name string = topic.name
output id string = topic.id
output endpoint string = topic.properties.endpoint
