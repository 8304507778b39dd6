// Update Manager maintenance toolkit: the Function App (Flex Consumption, Python 3.12) and all it
// needs, deployed into one resource group, plus
// - the Event Grid system topic of the maintenance configuration (and the custom cancel role),
//   in the configuration's resource group;
// - the app identity's roles on the target subscriptions and resource groups, and on each target
//   subscription the custom role for in-guest actions (Run Commands) when enableGuestActions is on;
// - optionally (all off by default), for the run's notifications and the hold/approve links: an
//   Event Grid custom topic, ACS e-mail, and a Key Vault for the Teams URL and the link-signing key.
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
// Network

@description('Public network access of the app storage account. Enabled: any network may try (Entra ID is still required). Disabled: private endpoints and trusted Azure services (the Event Grid system topic) only; the app then needs functionAppSubnetId and private endpoints for blob, queue and table (infra/README.md, "Closed storage").')
@allowed([
  'Enabled'
  'Disabled'
])
param storagePublicNetworkAccess string = 'Enabled'

@description('Resource id of a subnet delegated to Microsoft.App/environments, for Flex Consumption VNet integration. Required when storagePublicNetworkAccess is Disabled. Empty: no VNet integration.')
param functionAppSubnetId string = ''

// ---------------------------------------------------------------------------------------------
// Maintenance configuration: an existing one, or a new one created from the parameters below

@description('Resource id of an existing maintenance configuration (/subscriptions/.../resourceGroups/.../providers/Microsoft.Maintenance/maintenanceConfigurations/...). Empty: create one from the newConfiguration* parameters.')
param maintenanceConfigurationId string = ''

@description('Name of the maintenance configuration to create (when maintenanceConfigurationId is empty). Empty: mc-<environmentName>.')
param newConfigurationName string = ''

@description('First window start of the new configuration, "yyyy-MM-dd HH:mm" in newConfigurationTimeZone; required when maintenanceConfigurationId is empty, and at least 40 minutes ahead for the first pre event. Every deployment writes it to the schedule, so keep it the same. azd: the preprovision hook sets MAINTENANCE_WINDOW_START to tomorrow 22:00 once.')
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

// ---------------------------------------------------------------------------------------------
// Event Grid

@description('Name of an existing Event Grid system topic of the configuration to adopt (it must exist, in the configuration\'s resource group): a configuration can have only one, so give its name if it has one. Its user-assigned identities are kept. Empty: create evgt-mt-<token>.')
param systemTopicName string = ''

@description('Region of the system topic. Empty: the maintenance configuration\'s region.')
param systemTopicLocation string = ''

@description('function: Event Grid calls pre_maintenance and post_maintenance. queue: Event Grid writes both event types to the maintenance-events queue, read by maintenance_events_queue.')
@allowed([
  'function'
  'queue'
])
param deliveryMode string = 'function'

@description('The second pass: create the event subscriptions and assign the custom roles. false on the first pass (the functions do not exist yet, the new role definitions are still replicating); true on the second pass of a plain az deployment. azd leaves it false and does the second pass from its postdeploy hook (infra/subscriptions.bicep).')
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

// ---------------------------------------------------------------------------------------------
// Notifications and the hold/approve links (all off by default; see infra/README.md)

@description('Create an Event Grid custom topic (CloudEvents 1.0 input, local auth off) the app publishes run milestones to with its identity (EventGrid Data Sender on that topic only), and set MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT. Subscriptions to it are yours to add.')
param enableNotifyTopic bool = false

@description('E-mail the run milestones with Azure Communication Services and set MAINTENANCE_EMAIL_ENDPOINT, MAINTENANCE_EMAIL_SENDER and MAINTENANCE_EMAIL_TO. Creates an Email Communication Services resource with an Azure managed domain (DoNotReply@<guid>.azurecomm.net), a Communication Services resource linked to it and a custom send role for the app on it; with existingEmailEndpoint, sends through that resource and creates nothing.')
param enableEmailNotifications bool = false

@description('MAINTENANCE_EMAIL_TO: the recipients, comma-separated (at most 50). Required with enableEmailNotifications: the app refuses to start with e-mail half configured.')
param emailRecipients string = ''

@description('Data location of the new Communication Services resources (where ACS keeps e-mail data at rest), e.g. Europe, United States, UK; not an Azure region.')
param emailDataLocation string = 'Europe'

@description('Endpoint (https://<name>.<geo>.communication.azure.com) of an existing Communication Services resource to send through instead of creating one (with enableEmailNotifications). Giving the app identity a send role on it is up to you (infra/README.md).')
param existingEmailEndpoint string = ''

@description('Sender address on a domain linked to that existing resource, e.g. DoNotReply@<your domain>. Required with existingEmailEndpoint.')
param existingEmailSender string = ''

@description('Post run milestones to a Teams Workflows webhook: MAINTENANCE_TEAMS_WEBHOOK_URL becomes a Key Vault reference to the entry maintenance-teams-webhook-url of the toolkit\'s vault (created with it). Put the URL there first (infra/README.md), or give teamsWebhookUrl.')
param enableTeamsNotifications bool = false

@secure()
@description('The Teams Workflows webhook URL, written to the vault entry on every deployment that gives it. Empty: the entry is left to the operator.')
param teamsWebhookUrl string = ''

@description('Signed hold (or approve) links in the pre notice: MAINTENANCE_HOLD_KEY becomes a Key Vault reference to the entry maintenance-hold-key (base64 of at least 32 random bytes) of the toolkit\'s vault, and MAINTENANCE_APPROVAL_MODE is set. The links reach people through e-mail or Teams.')
param enableHoldLinks bool = false

@secure()
@description('The link-signing key (openssl rand -base64 32), written to the vault entry on every deployment that gives it. Empty: the entry is left to the operator.')
param holdKey string = ''

@description('MAINTENANCE_APPROVAL_MODE: hold (a link holds the run) or approve (the run is cancelled unless a link approves it before the cutoff). approve turns the hold links on and needs e-mail or Teams.')
@allowed([
  'hold'
  'approve'
])
param approvalMode string = 'hold'

@description('Create the toolkit\'s Key Vault (RBAC mode, soft delete, read access for the app) without referring to it yet, so that the Teams URL and the hold key can be put there before enableTeamsNotifications or enableHoldLinks refers to them. Those two create it anyway.')
param enableKeyVault bool = false

@description('Purge protection on that vault: a deleted vault, and its name, stay for 90 days, and it cannot be turned off again.')
param keyVaultPurgeProtection bool = false

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
  queryPack: 'pack-mt-${resourceToken}'
  alerts: 'mt-${resourceToken}'
  systemTopic: empty(systemTopicName) ? 'evgt-mt-${resourceToken}' : systemTopicName
  newConfiguration: empty(newConfigurationName) ? 'mc-${environmentName}' : newConfigurationName
  notifyTopic: 'evgt-mt-runs-${resourceToken}'
  emailService: 'ecs-mt-${resourceToken}'
  communicationService: 'acs-mt-${resourceToken}'
  keyVault: 'kv-mt-${resourceToken}'
}

// The app's defaults (handlers/core/settings.py); set explicitly so the storage resources and the app
// settings cannot drift apart.
var ledgerTableName = 'MaintenanceRuns'
var workQueueName = 'maintenance-work'
var eventsQueueName = 'maintenance-events'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'deadletter'
var reportContainerName = 'reports'
var handoffContainerName = 'handoffs'

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

// An adopted topic is read first: the topic's PUT replaces its identity block, so its user-assigned
// identities are written back with the system-assigned one the toolkit needs.
var adoptTopic = !empty(systemTopicName)

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
  MAINTENANCE_HANDOFF_CONTAINER: handoffContainerName
}

// Notifications and links: each group of settings only when it is turned on, so a deployment with
// the defaults sets exactly the settings above.
var holdLinksOn = enableHoldLinks || approvalMode == 'approve'
var createKeyVault = enableKeyVault || enableTeamsNotifications || holdLinksOn
var useExistingEmail = !empty(existingEmailEndpoint)
var createEmail = enableEmailNotifications && !useExistingEmail
var teamsWebhookEntryName = 'maintenance-teams-webhook-url'
var holdKeyEntryName = 'maintenance-hold-key'
// The vault's URI from its name (what vaultUri returns), so the references need no output of a
// module that may not be deployed; the Function App waits for that module (dependsOn below).
var keyVaultUri = 'https://${names.keyVault}${environment().suffixes.keyvaultDns}/'
var notifyTopicSettings = enableNotifyTopic ? {
  MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT: notifyTopic.outputs.endpoint
} : {}
var emailSettings = enableEmailNotifications ? {
  MAINTENANCE_EMAIL_ENDPOINT: createEmail ? email.outputs.endpoint : existingEmailEndpoint
  MAINTENANCE_EMAIL_SENDER: createEmail ? email.outputs.senderAddress : existingEmailSender
  MAINTENANCE_EMAIL_TO: emailRecipients
} : {}
// Versionless references: the platform takes the newest version (and rereads it within a day).
var teamsSettings = enableTeamsNotifications ? {
  MAINTENANCE_TEAMS_WEBHOOK_URL: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${teamsWebhookEntryName}/)'
} : {}
var holdLinkSettings = holdLinksOn ? {
  MAINTENANCE_HOLD_KEY: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${holdKeyEntryName}/)'
  MAINTENANCE_APPROVAL_MODE: approvalMode
} : {}
var outputAppSettings = union(notifyTopicSettings, emailSettings, teamsSettings, holdLinkSettings)

module identity 'app/identity.bicep' = {
  name: 'mt-identity-${resourceToken}'
  params: {
    name: names.identity
    location: location
    tags: allTags
  }
}

// A closed storage account is reachable only through VNet integration: without a subnet the app
// could not start. This module exists only to refuse that (its parameter must not be empty) before
// the account is closed; fail() would say it in words, but needs a recent Bicep.
module closedStorageNeedsSubnet 'app/closed-storage-needs-subnet.bicep' = if (storagePublicNetworkAccess == 'Disabled') {
  name: 'mt-storage-disabled-needs-subnet-${resourceToken}'
  params: {
    functionAppSubnetId: functionAppSubnetId
  }
}

module storage 'app/storage.bicep' = {
  name: 'mt-storage-${resourceToken}'
  params: {
    name: names.storage
    location: location
    tags: allTags
    publicNetworkAccess: storagePublicNetworkAccess
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    reportContainerName: reportContainerName
    handoffContainerName: handoffContainerName
    queueNames: [
      workQueueName
      '${workQueueName}-poison'
      eventsQueueName
      '${eventsQueueName}-poison'
    ]
    ledgerTableName: ledgerTableName
  }
  dependsOn: [
    closedStorageNeedsSubnet
  ]
}

module monitoring 'app/monitoring.bicep' = {
  name: 'mt-monitoring-${resourceToken}'
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    queryPackName: names.queryPack
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
    startDateTime: newConfigurationStartDateTime
    duration: newConfigurationDuration
    timeZone: newConfigurationTimeZone
    recurEvery: newConfigurationRecurEvery
    rebootSetting: newConfigurationRebootSetting
    linuxClassifications: newConfigurationLinuxClassifications
    windowsClassifications: newConfigurationWindowsClassifications
  }
}

module adoptedTopicIdentity 'app/existing-topic-identity.bicep' = if (adoptTopic) {
  name: 'mt-adopted-topic-${resourceToken}'
  scope: resourceGroup(configurationSubscriptionId, configurationResourceGroupName)
  params: {
    name: systemTopicName
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
    userAssignedIdentities: adoptTopic ? adoptedTopicIdentity.outputs.userAssignedIdentities : {}
  }
  dependsOn: [
    newConfiguration
  ]
}

// Every custom role, and the app's roles on its targets: definitions (and Reader) on the first pass,
// the custom roles' assignments on the second (app/custom-roles.bicep says why).
module customRoles 'app/custom-roles.bicep' = {
  name: 'mt-custom-roles-${resourceToken}'
  scope: resourceGroup(configurationSubscriptionId, configurationResourceGroupName)
  params: {
    principalId: identity.outputs.principalId
    assign: deployEventSubscriptions
    maintenanceConfigurationName: configurationName
    targetSubscriptionIds: targetSubscriptionIds
    targetResourceGroupIds: targetResourceGroupIds
    includeSnapshotActions: snapshotDisks != 'none'
    enableGuestActions: enableGuestActions
    communicationServiceId: createEmail ? email.outputs.communicationServiceId : ''
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
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    eventsQueueName: eventsQueueName
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
    virtualNetworkSubnetId: functionAppSubnetId
    appSettings: union(appSettings, outputAppSettings)
    resolveKeyVaultReferences: enableTeamsNotifications || holdLinksOn
  }
  // The host starts as soon as the app exists: give it its storage roles first, and the vault
  // (with the app's role on it) its Key Vault references point to.
  dependsOn: [
    storageAccess
    keyVault
  ]
}

// Notifications (see the parameters above). Each is created only when it is turned on.
module notifyTopic 'app/notify-topic.bicep' = if (enableNotifyTopic) {
  name: 'mt-notify-topic-${resourceToken}'
  params: {
    name: names.notifyTopic
    location: location
    tags: allTags
    publisherPrincipalId: identity.outputs.principalId
  }
}

module email 'app/email.bicep' = if (createEmail) {
  name: 'mt-email-${resourceToken}'
  params: {
    emailServiceName: names.emailService
    communicationServiceName: names.communicationService
    dataLocation: emailDataLocation
    tags: allTags
  }
}

module keyVault 'app/key-vault.bicep' = if (createKeyVault) {
  name: 'mt-key-vault-${resourceToken}'
  params: {
    name: names.keyVault
    location: location
    tags: allTags
    readerPrincipalId: identity.outputs.principalId
    enablePurgeProtection: keyVaultPurgeProtection
    teamsWebhookEntryName: teamsWebhookEntryName
    holdKeyEntryName: holdKeyEntryName
    teamsWebhookUrl: teamsWebhookUrl
    holdKey: holdKey
  }
}

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
// What the second pass assigns (app/custom-roles.bicep).
output MAINTENANCE_CONFIGURATION_NAME string = configurationName
output ROLE_TARGET_SUBSCRIPTION_IDS array = targetSubscriptionIds
output ROLE_TARGET_RESOURCE_GROUP_IDS array = targetResourceGroupIds
output ROLE_SNAPSHOT_ACTIONS bool = snapshotDisks != 'none'
output ROLE_GUEST_ACTIONS bool = enableGuestActions
output ROLE_EMAIL_RESOURCE_ID string = createEmail ? email.outputs.communicationServiceId : ''
// Empty unless the feature is on. The vault's name is for the operator's `az keyvault` commands.
output NOTIFY_TOPIC_ENDPOINT string = enableNotifyTopic ? notifyTopic.outputs.endpoint : ''
output NOTIFY_EMAIL_SENDER string = enableEmailNotifications ? (createEmail ? email.outputs.senderAddress : existingEmailSender) : ''
output KEY_VAULT_NAME string = createKeyVault ? keyVault.outputs.name : ''

