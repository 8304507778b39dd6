// The Event Grid system topic of the maintenance configuration, and metric alerts on its delivery.
// Deployed into the configuration's resource group: Event Grid creates a system topic in the
// subscription of its source, and allows only one system topic per source. The topic's
// system-assigned identity is what dead-letters (and, in queue mode, delivers) to storage. An
// adopted topic keeps the user-assigned identities it had: this PUT replaces the identity block.

@description('Name of the system topic: a new one, or the configuration\'s existing one (in this resource group) to adopt.')
param name string

@description('Region of the system topic: the maintenance configuration\'s region.')
param location string

@description('Tags for the topic and its alerts.')
param tags object

@description('Name of the maintenance configuration (in this resource group).')
param maintenanceConfigurationName string

@description('Action group the alerts notify; empty for alerts without notification.')
param actionGroupId string

@description('The user-assigned identities an adopted topic already has, as existing-topic-identity.bicep read them (resource id -> principal and client id), kept beside the system-assigned one; empty for a new topic.')
param userAssignedIdentities object

var topicIdentity = empty(userAssignedIdentities) ? {
  type: 'SystemAssigned'
} : {
  type: 'SystemAssigned, UserAssigned'
  userAssignedIdentities: userAssignedIdentities
}

resource configuration 'Microsoft.Maintenance/maintenanceConfigurations@2023-04-01' existing = {
  name: maintenanceConfigurationName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  identity: topicIdentity
  properties: {
    source: configuration.id
    topicType: 'Microsoft.Maintenance.MaintenanceConfigurations'
  }
}

// A failed delivery of a pre event matters within minutes (the run is about to start), and a
// dead-lettered one means that run's work never happened: both page the operator.
var deliveryAlerts = [
  {
    name: 'delivery-failures'
    metricName: 'DeliveryAttemptFailCount'
    severity: 2
    description: 'Event Grid failed to deliver a maintenance event to its endpoint (it retries within the subscription\'s retry policy).'
  }
  {
    name: 'dead-lettered'
    metricName: 'DeadLetteredCount'
    severity: 1
    description: 'A maintenance event was dead-lettered: its work did not run. See the deadletter container of the app storage account.'
  }
]

resource topicAlerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [for alert in deliveryAlerts: {
  name: '${name}-${alert.name}'
  location: 'global'
  tags: tags
  properties: {
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      systemTopic.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: alert.metricName
          metricName: alert.metricName
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: empty(actionGroupId) ? [] : [
      {
        actionGroupId: actionGroupId
      }
    ]
  }
}]

output id string = systemTopic.id
output name string = systemTopic.name
output principalId string = systemTopic.identity.principalId
