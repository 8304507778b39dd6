// Reads the identity of an existing Event Grid system topic that main.bicep adopts
// (systemTopicName). event-grid-topic.bicep writes the topic with a PUT, which replaces the whole
// identity block: the user-assigned identities read here are written back with it, so adopting a
// topic does not take away an identity someone else gave it. Deployed into the topic's resource
// group; the topic must exist.

@description('Name of the existing system topic (in this resource group).')
param name string

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: name
}

// The map itself (resource id -> {principalId, clientId}), not objectKeys() of it to rebuild with
// toObject(): checkov's Bicep parser knows neither function, and Event Grid takes the map back as
// it gave it. Safe access all the way: a topic without any identity has no identity block at all.
@description('The topic\'s user-assigned identities as Event Grid returns them (resource id -> principal and client id); empty when it has none.')
output userAssignedIdentities object = topic.?identity.?userAssignedIdentities ?? {}
