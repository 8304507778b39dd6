// Second pass for azd: the Event Grid subscriptions to the functions, once their code is deployed.
// infra/hooks/postdeploy.sh deploys this into the system topic's resource group with the values
// main.bicep output (azd keeps them in the environment). It creates exactly what main.bicep
// creates with deployEventSubscriptions=true: same module, same subscription names.
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
