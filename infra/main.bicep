// Update Manager maintenance toolkit: the Function App (Flex Consumption, Python 3.11) and all it
// needs, deployed into one resource group, plus
// - the Event Grid system topic of the maintenance configuration (and the custom cancel role),
//   in the configuration's resource group;
// - the app identity's roles on the target subscriptions and resource groups, and on each target
//   subscription the custom role for in-guest actions (Run Commands) when enableGuestActions is on.
//
// Two passes, because Event Grid refuses a subscription to a function that does not exist yet:
//   1. this template with deployEventSubscriptions=false (azd provision; the azd default);
//   2. after the code is deployed: infra/subscriptions.bicep (what the azd postdeploy hook runs),
//      or this template again with deployEventSubscriptions=true (plain az deployments).
// See infra/README.md.
targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Environment

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd: AZURE_ENV_NAME). Part of resource names and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of the app resources; it must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Extra tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Function App

@description('Upper bound of Flex Consumption instances (40 is the platform minimum).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per Flex Consumption instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// ---------------------------------------------------------------------------------------------
// Maintenance configuration: an existing one, or a new one created from the parameters below

@description('Resource id of an existing maintenance configuration (/subscriptions/.../resourceGroups/.../providers/Microsoft.Maintenance/maintenanceConfigurations/...). Empty: create one from the newConfiguration* parameters.')
param maintenanceConfigurationId string = ''

@description('Name of the maintenance configuration to create (when maintenanceConfigurationId is empty). Empty: mc-<environmentName>.')
param newConfigurationName string = ''

@description('First window start of the new configuration, "yyyy-MM-dd HH:mm" in newConfigurationTimeZone. Empty: today at 22:00 (set it explicitly for a stable schedule).')
param newConfigurationStartDateTime string = ''

@description('Window length of the new configuration, "HH:mm" (01:30 to 03:55).')
param newConfigurationDuration string = '03:55'

@description('Time zone of the new configuration (Windows time zone id).')
param newConfigurationTimeZone string = 'UTC'

@description('Recurrence of the new configuration, e.g. "1Week Sunday", "1Month Second Tuesday".')
param newConfigurationRecurEvery string = '1Week Sunday'

@description('Reboot setting of the new configuration.')
@allowed([
  'IfRequired'
  'Never'
  'Always'
])
param newConfigurationRebootSetting string = 'IfRequired'

@description('Linux classifications the new configuration installs.')
param newConfigurationLinuxClassifications array = [
  'Critical'
  'Security'
]

@description('Windows classifications the new configuration installs.')
param newConfigurationWindowsClassifications array = [
  'Critical'
  'Security'
]

@description('Today\'s date (UTC); only the default start of a new configuration uses it. Leave it alone.')
param today string = utcNow('yyyy-MM-dd')

// ---------------------------------------------------------------------------------------------
// Event Grid

@description('Name of the configuration\'s Event Grid system topic. Empty: evgt-mt-<token>. A configuration can have only one system topic: if it already has one, give its name (it must be in the configuration\'s resource group).')
param systemTopicName string = ''

@description('Region of the system topic. Empty: the maintenance configuration\'s region.')
param systemTopicLocation string = ''

@description('function: Event Grid calls pre_maintenance and post_maintenance. queue: Event Grid writes both event types to the maintenance-events queue, read by maintenance_events_queue.')
@allowed([
  'function'
  'queue'
])
param deliveryMode string = 'function'

@description('Create the event subscriptions. false on the first pass (the functions do not exist yet); true on the second pass of a plain az deployment. azd leaves it false and creates them from its postdeploy hook (infra/subscriptions.bicep).')
param deployEventSubscriptions bool = false

@description('Minutes Event Grid keeps retrying a pre event (it fires 30-40 minutes before the window; a cancel is honoured until about 10 minutes before).')
@minValue(1)
@maxValue(30)
param preEventTimeToLiveInMinutes int = 20

@description('Minutes Event Grid keeps retrying a post event.')
@minValue(1)
@maxValue(1440)
param postEventTimeToLiveInMinutes int = 1440

@description('Delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

// ---------------------------------------------------------------------------------------------
// What the app may touch

@description('Subscription ids whose machines the app manages: Reader, Virtual Machine Contributor, Tag Contributor and Disk Snapshot Contributor there, and the custom guest-actions role when enableGuestActions is true.')
param targetSubscriptionIds array = []

@description('Resource group ids (/subscriptions/<id>/resourceGroups/<name>) whose machines, disks or snapshots the app manages: the same roles, scoped to each group.')
param targetResourceGroupIds array = []

// ---------------------------------------------------------------------------------------------
// App settings

@description('MAINTENANCE_DRY_RUN: read, plan and record everything but change nothing in Azure (no start, stop, snapshot or cancel). On by default for a first deployment; turn it off once a run\'s plan looks right.')
param dryRun bool = true

@description('MAINTENANCE_SNAPSHOT_DISKS: os, all or none.')
@allowed([
  'os'
  'all'
  'none'
])
param snapshotDisks string = 'os'

@description('MAINTENANCE_SNAPSHOT_RESOURCE_GROUP: resource group for snapshots, in each disk\'s subscription. Empty: the disk\'s own group.')
param snapshotResourceGroup string = ''

@description('MAINTENANCE_CANCEL_ON_FAILURE: cancel the run when the pre-event verdict fails.')
param cancelOnFailure bool = true

@description('MAINTENANCE_GUEST_ACTIONS: in-guest actions (stop services before patching and start them after, operator scripts) through managed Run Commands. true also creates, on each target subscription, a custom role with only the Run Command actions on VMs and Arc-enabled servers (and reading Arc machines) and assigns it to the app. Turning it off later leaves an existing role and assignment in place.')
param enableGuestActions bool = true

// ---------------------------------------------------------------------------------------------
// Alerts

@description('Address the alerts mail to. Empty: alerts without an action group.')
param alertEmail string = ''

// =============================================================================================

var resourceToken = toLower(uniqueString(resourceGroup().id, environmentName, location))
var allTags = union(tags, {
  'azd-env-name': environmentName
})

var names = {
  identity: 'id-mt-${resourceToken}'
  storage: 'stmt${resourceToken}'
  plan: 'plan-mt-${resourceToken}'
  functionApp: 'func-mt-${resourceToken}'
  logAnalytics: 'log-mt-${resourceToken}'
  applicationInsights: 'appi-mt-${resourceToken}'
  alerts: 'mt-${resourceToken}'
  systemTopic: empty(systemTopicName) ? 'evgt-mt-${resourceToken}' : systemTopicName
  newConfiguration: empty(newConfigurationName) ? 'mc-${environmentName}' : newConfigurationName
}

// The app's defaults (handlers/core/settings.py); set explicitly so the storage resources and the app
// settings cannot drift apart.
var ledgerTableName = 'MaintenanceRuns'
var workQueueName = 'maintenance-work'
var eventsQueueName = 'maintenance-events'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'deadletter'
var reportContainerName = 'reports'

// Where the maintenance configuration lives. For a new one, its id is known before it exists.
var createConfiguration = empty(maintenanceConfigurationId)
var configurationId = createConfiguration ? resourceId('Microsoft.Maintenance/maintenanceConfigurations', names.newConfiguration) : maintenanceConfigurationId
var configurationIdParts = split(configurationId, '/')
var configurationSubscriptionId = configurationIdParts[2]
var configurationResourceGroupName = configurationIdParts[4]
var configurationName = configurationIdParts[8]

resource existingConfiguration 'Microsoft.Maintenance/maintenanceConfigurations@2023-04-01' existing = {
  name: configurationName
  scope: resourceGroup(configurationSubscriptionId, configurationResourceGroupName)
}

var topicLocation = !empty(systemTopicLocation) ? systemTopicLocation : (createConfiguration ? location : existingConfiguration.location)

// environment().resourceManager ends with a slash; the app wants the bare endpoint.
var armEndpoint = environment().resourceManager
var appSettings = {
  AZURE_RESOURCE_MANAGER_ENDPOINT: endsWith(armEndpoint, '/') ? substring(armEndpoint, 0, length(armEndpoint) - 1) : armEndpoint
  MAINTENANCE_LEDGER_TABLE: ledgerTableName
  MAINTENANCE_WORK_QUEUE: workQueueName
  MAINTENANCE_EVENTS_QUEUE: eventsQueueName
  MAINTENANCE_ALLOWED_CONFIGURATION_IDS: configurationId
  MAINTENANCE_DRY_RUN: dryRun ? 'true' : 'false'
  MAINTENANCE_SNAPSHOT_DISKS: snapshotDisks
  MAINTENANCE_SNAPSHOT_RESOURCE_GROUP: snapshotResourceGroup
  MAINTENANCE_CANCEL_ON_FAILURE: cancelOnFailure ? 'true' : 'false'
  MAINTENANCE_GUEST_ACTIONS: enableGuestActions ? 'true' : 'false'
  MAINTENANCE_REPORT_CONTAINER: reportContainerName
}

module identity 'app/identity.bicep' = {
  name: 'mt-identity-${resourceToken}'
  params: {
    name: names.identity
    location: location
    tags: allTags
  }
}

module storage 'app/storage.bicep' = {
  name: 'mt-storage-${resourceToken}'
  params: {
    name: names.storage
    location: location
    tags: allTags
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    reportContainerName: reportContainerName
    queueNames: [
      workQueueName
      '${workQueueName}-poison'
      eventsQueueName
      '${eventsQueueName}-poison'
    ]
    ledgerTableName: ledgerTableName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'mt-monitoring-${resourceToken}'
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    location: location
    tags: allTags
    publisherPrincipalId: identity.outputs.principalId
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'mt-alerts-${resourceToken}'
  params: {
    namePrefix: names.alerts
    location: location
    tags: allTags
    alertEmail: alertEmail
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

module newConfiguration 'app/maintenance-configuration.bicep' = if (createConfiguration) {
  name: 'mt-maintenance-configuration-${resourceToken}'
  params: {
    name: names.newConfiguration
    location: location
    tags: allTags
    startDateTime: empty(newConfigurationStartDateTime) ? '${today} 22:00' : newConfigurationStartDateTime
    duration: newConfigurationDuration
    timeZone: newConfigurationTimeZone
    recurEvery: newConfigurationRecurEvery
    rebootSetting: newConfigurationRebootSetting
    linuxClassifications: newConfigurationLinuxClassifications
    windowsClassifications: newConfigurationWindowsClassifications
  }
}

module eventGridTopic 'app/event-grid-topic.bicep' = {
  name: 'mt-topic-${resourceToken}'
  scope: resourceGroup(configurationSubscriptionId, configurationResourceGroupName)
  params: {
    name: names.systemTopic
    location: topicLocation
    tags: allTags
    maintenanceConfigurationName: configurationName
    actionGroupId: alerts.outputs.actionGroupId
  }
  dependsOn: [
    newConfiguration
  ]
}

module cancelRole 'app/maintenance-cancel-role.bicep' = {
  name: 'mt-cancel-role-${resourceToken}'
  scope: resourceGroup(configurationSubscriptionId, configurationResourceGroupName)
  params: {
    maintenanceConfigurationName: configurationName
    principalId: identity.outputs.principalId
  }
  dependsOn: [
    newConfiguration
  ]
}

module storageAccess 'app/storage-access.bicep' = {
  name: 'mt-storage-access-${resourceToken}'
  params: {
    storageAccountName: storage.outputs.name
    appPrincipalId: identity.outputs.principalId
    topicPrincipalId: eventGridTopic.outputs.principalId
    deliveryMode: deliveryMode
  }
}

module functionApp 'app/function-app.bicep' = {
  name: 'mt-function-app-${resourceToken}'
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: allTags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSettings: appSettings
  }
  // The host starts as soon as the app exists: give it its storage roles first.
  dependsOn: [
    storageAccess
  ]
}

module subscriptionRoles 'app/target-subscription-roles.bicep' = [for (subscriptionId, i) in targetSubscriptionIds: {
  name: take('mt-roles-${resourceToken}-sub-${i}', 64)
  scope: subscription(subscriptionId)
  params: {
    principalId: identity.outputs.principalId
    includeSnapshotRole: snapshotDisks != 'none'
  }
}]

// The custom guest-actions role is defined in, and assigned on, each target subscription: a second
// deployment per subscription beside subscriptionRoles. Target resource groups get no such role.
module guestActionsRoles 'app/guest-actions-role.bicep' = [for (subscriptionId, i) in targetSubscriptionIds: if (enableGuestActions) {
  name: take('mt-guest-role-${resourceToken}-sub-${i}', 64)
  scope: subscription(subscriptionId)
  params: {
    principalId: identity.outputs.principalId
  }
}]

module resourceGroupRoles 'app/target-resource-group-roles.bicep' = [for (resourceGroupId, i) in targetResourceGroupIds: {
  name: take('mt-roles-${resourceToken}-rg-${i}', 64)
  scope: resourceGroup(split(resourceGroupId, '/')[2], split(resourceGroupId, '/')[4])
  params: {
    principalId: identity.outputs.principalId
    includeSnapshotRole: snapshotDisks != 'none'
  }
}]

// Second pass only (see the top of this file). azd creates the same subscriptions, with the same
// names, from infra/subscriptions.bicep in its postdeploy hook.
module eventSubscriptions 'app/event-subscriptions.bicep' = if (deployEventSubscriptions) {
  name: 'mt-event-subscriptions-${resourceToken}'
  scope: resourceGroup(configurationSubscriptionId, configurationResourceGroupName)
  params: {
    systemTopicName: eventGridTopic.outputs.name
    functionAppId: functionApp.outputs.id
    storageAccountId: storage.outputs.id
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    eventsQueueName: eventsQueueName
    deliveryMode: deliveryMode
    preEventTimeToLiveInMinutes: preEventTimeToLiveInMinutes
    postEventTimeToLiveInMinutes: postEventTimeToLiveInMinutes
    maxDeliveryAttempts: maxDeliveryAttempts
  }
  // Dead-lettering (and queue delivery) write with the topic's identity: roles first.
  dependsOn: [
    storageAccess
  ]
}

// Outputs: names and ids only. azd stores them in the environment, where the postdeploy hook
// (infra/hooks/postdeploy.sh) reads them.
output RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_ID string = functionApp.outputs.id
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output STORAGE_ACCOUNT_ID string = storage.outputs.id
output DEAD_LETTER_CONTAINER_NAME string = storage.outputs.deadLetterContainerName
output EVENTS_QUEUE_NAME string = eventsQueueName
output MAINTENANCE_CONFIGURATION_RESOURCE_ID string = configurationId
output SYSTEM_TOPIC_NAME string = eventGridTopic.outputs.name
output SYSTEM_TOPIC_RESOURCE_GROUP string = configurationResourceGroupName
output SYSTEM_TOPIC_SUBSCRIPTION_ID string = configurationSubscriptionId
output EVENT_DELIVERY_MODE string = deliveryMode
output PRE_EVENT_TTL_MINUTES int = preEventTimeToLiveInMinutes
output POST_EVENT_TTL_MINUTES int = postEventTimeToLiveInMinutes
output EVENT_MAX_DELIVERY_ATTEMPTS int = maxDeliveryAttempts
