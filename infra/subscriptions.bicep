// Second pass for azd: the Event Grid subscriptions to the functions, once their code is deployed,
// and the assignments of the custom roles, once their definitions (first pass) have replicated.
// infra/hooks/postdeploy.sh deploys this into the system topic's resource group (the maintenance
// configuration's) with the values main.bicep output (azd keeps them in the environment). It
// creates exactly what main.bicep creates with deployEventSubscriptions=true: same modules, same
// names.
targetScope = 'resourceGroup'

@description('Name of the maintenance configuration\'s system topic (main.bicep output SYSTEM_TOPIC_NAME).')
param systemTopicName string

@description('Resource id of the Function App (output FUNCTION_APP_ID).')
param functionAppId string

@description('Resource id of the app storage account (output STORAGE_ACCOUNT_ID).')
param storageAccountId string

@description('Dead-letter blob container (output DEAD_LETTER_CONTAINER_NAME).')
param deadLetterContainerName string = 'deadletter'

@description('Queue of queue-mode delivery (output EVENTS_QUEUE_NAME).')
param eventsQueueName string = 'maintenance-events'

@description('function or queue (output EVENT_DELIVERY_MODE).')
@allowed([
  'function'
  'queue'
])
param deliveryMode string = 'function'

@description('Retry window of a pre event in minutes (output PRE_EVENT_TTL_MINUTES).')
@minValue(1)
@maxValue(30)
param preEventTimeToLiveInMinutes int = 20

@description('Retry window of a post event in minutes (output POST_EVENT_TTL_MINUTES).')
@minValue(1)
@maxValue(1440)
param postEventTimeToLiveInMinutes int = 1440

@description('Delivery attempts before dead-lettering (output EVENT_MAX_DELIVERY_ATTEMPTS).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Principal (object) id of the app identity (output MANAGED_IDENTITY_PRINCIPAL_ID).')
param principalId string

@description('Name of the maintenance configuration, in this resource group (output MAINTENANCE_CONFIGURATION_NAME).')
param maintenanceConfigurationName string

@description('Target subscription ids (output ROLE_TARGET_SUBSCRIPTION_IDS).')
param targetSubscriptionIds array = []

@description('Target resource group ids (output ROLE_TARGET_RESOURCE_GROUP_IDS).')
param targetResourceGroupIds array = []

@description('Snapshots on (output ROLE_SNAPSHOT_ACTIONS).')
param includeSnapshotActions bool = true

@description('In-guest actions on (output ROLE_GUEST_ACTIONS).')
param enableGuestActions bool = true

@description('The toolkit\'s Communication Services resource, or empty (output ROLE_EMAIL_RESOURCE_ID).')
param communicationServiceId string = ''

module customRoles 'app/custom-roles.bicep' = {
  name: 'mt-custom-roles-hook'
  params: {
    principalId: principalId
    assign: true
    maintenanceConfigurationName: maintenanceConfigurationName
    targetSubscriptionIds: targetSubscriptionIds
    targetResourceGroupIds: targetResourceGroupIds
    includeSnapshotActions: includeSnapshotActions
    enableGuestActions: enableGuestActions
    communicationServiceId: communicationServiceId
  }
}

module eventSubscriptions 'app/event-subscriptions.bicep' = {
  name: 'mt-event-subscriptions-hook'
  params: {
    systemTopicName: systemTopicName
    functionAppId: functionAppId
    storageAccountId: storageAccountId
    deadLetterContainerName: deadLetterContainerName
    eventsQueueName: eventsQueueName
    deliveryMode: deliveryMode
    preEventTimeToLiveInMinutes: preEventTimeToLiveInMinutes
    postEventTimeToLiveInMinutes: postEventTimeToLiveInMinutes
    maxDeliveryAttempts: maxDeliveryAttempts
  }
}

output eventSubscriptionNames array = eventSubscriptions.outputs.names
