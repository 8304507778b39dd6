// One Event Grid subscription per maintenance event type on the configuration's system topic:
// PreMaintenanceEvent -> pre_maintenance, PostMaintenanceEvent -> post_maintenance (or, in queue
// mode, both to the maintenance-events queue, read by maintenance_events_queue).
// An AzureFunction endpoint is refused until the function exists, so this is deployed only after
// the code: by infra/subscriptions.bicep from the azd postdeploy hook, or by main.bicep with
// deployEventSubscriptions=true on a second pass.

@description('Name of the system topic (in this resource group).')
param systemTopicName string

@description('Resource id of the Function App.')
param functionAppId string

@description('Resource id of the app storage account (dead-letter container, events queue).')
param storageAccountId string

@description('Blob container for dead-lettered events.')
param deadLetterContainerName string

@description('Queue for queue-mode delivery (MAINTENANCE_EVENTS_QUEUE).')
param eventsQueueName string

@description('function: Event Grid calls pre_maintenance / post_maintenance; queue: Event Grid writes both event types to the events queue.')
@allowed([
  'function'
  'queue'
])
param deliveryMode string

@description('Minutes Event Grid keeps retrying a pre event. A pre event fires 30-40 minutes before the window and a cancel is honoured only until about 10 minutes before it, so retrying much longer is useless.')
@minValue(1)
@maxValue(30)
param preEventTimeToLiveInMinutes int

@description('Minutes Event Grid keeps retrying a post event (restoring VMs is still worth doing hours later).')
@minValue(1)
@maxValue(1440)
param postEventTimeToLiveInMinutes int

@description('Delivery attempts before an event is dead-lettered (whichever of this and the time to live comes first).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

var subscriptions = [
  {
    name: 'pre-maintenance'
    eventType: 'Microsoft.Maintenance.PreMaintenanceEvent'
    functionName: 'pre_maintenance'
    eventTimeToLiveInMinutes: preEventTimeToLiveInMinutes
  }
  {
    name: 'post-maintenance'
    eventType: 'Microsoft.Maintenance.PostMaintenanceEvent'
    functionName: 'post_maintenance'
    eventTimeToLiveInMinutes: postEventTimeToLiveInMinutes
  }
]

resource eventSubscriptions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = [for entry in subscriptions: {
  parent: systemTopic
  name: entry.name
  properties: union({
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        entry.eventType
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: entry.eventTimeToLiveInMinutes
    }
    // Undeliverable events land here, written by the topic's own identity. (When a pre event
    // cannot be delivered at all, Update Manager cancels that run itself.)
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }, deliveryMode == 'function' ? {
    // One event per call, acknowledged in well under a second: the functions only validate,
    // record and queue the work (see handlers/edge/intake.py).
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${entry.functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
  } : {
    deliveryWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storageAccountId
          queueName: eventsQueueName
        }
      }
    }
  })
}]

output names array = [for entry in subscriptions: entry.name]
