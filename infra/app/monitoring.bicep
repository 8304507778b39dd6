// Log Analytics workspace + workspace-based Application Insights, with local (instrumentation-key)
// authentication disabled: App Insights then accepts telemetry only from Entra ID principals that
// hold Monitoring Metrics Publisher on it. The app sends with its user-assigned identity
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING in function-app.bicep), so the connection string it
// is given only says where to send, and cannot be used on its own to write telemetry.
//
// And a query pack with the README's three queries (Telemetry), listed in the Queries pane of the
// Application Insights Logs blade (they read its traces and dependencies tables and the
// maintenance.* customDimensions of handlers/core/telemetry.py).

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Region of both resources.')
param location string

@description('Tags for both resources.')
param tags object

@description('Name of the query pack holding the toolkit\'s saved queries.')
param queryPackName string

@description('Principal (object) id of the identity that sends telemetry (the app\'s identity).')
param publisherPrincipalId string

@description('Days the workspace keeps data.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
var publisherRoleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

resource publisherRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, publisherPrincipalId, publisherRoleDefinitionId)
  scope: appInsights
  properties: {
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: publisherRoleDefinitionId
  }
}

resource queryPack 'Microsoft.OperationalInsights/queryPacks@2019-09-01' = {
  name: queryPackName
  location: location
  tags: tags
  properties: {}
}

// The same text as README.md, Telemetry (tests/infra/test_bicep.py compares them).
var savedQueries = [
  {
    key: 'run-story'
    displayName: 'Maintenance toolkit: one run\'s story'
    description: 'Every log line and step of one maintenance run, in order. Set run to its correlation id (the applyUpdates id).'
    body: '''let run = "<the run's correlation id>";
union
    (traces
    | where tostring(customDimensions["maintenance.correlation_id"]) =~ run
    | project timestamp, phase = tostring(customDimensions["maintenance.phase"]),
        step = tostring(customDimensions["maintenance.step"]),
        resource = tostring(customDimensions["maintenance.resource_id"]),
        outcome = tostring(customDimensions["maintenance.outcome"]), entry = message, severityLevel),
    (dependencies
    | where tostring(customDimensions["maintenance.correlation_id"]) =~ run
        and name == tostring(customDimensions["maintenance.step"])
    | project timestamp, phase = tostring(customDimensions["maintenance.phase"]), step = name, resource = "",
        outcome = tostring(customDimensions["maintenance.outcome"]),
        entry = strcat("step ", name, " took ", round(duration / 1000, 1), " s"), severityLevel = iff(success, 1, 3))
| order by timestamp asc'''
  }
  {
    key: 'runs-cancelled'
    displayName: 'Maintenance toolkit: runs cancelled this month, and why'
    description: 'Each run whose cancel the toolkit sent and Update Manager accepted since the first of the month, with the reasons against it.'
    body: '''traces
| where timestamp >= startofmonth(now())
| where tostring(customDimensions["maintenance.action"]) == "cancel"
    and tostring(customDimensions["maintenance.outcome"]) == "cancelled"
| summarize cancelled = min(timestamp), reasons = take_any(tostring(customDimensions["maintenance.reason"]))
    by run = tostring(customDimensions["maintenance.correlation_id"])
| order by cancelled desc'''
  }
  {
    key: 'failed-starts'
    displayName: 'Maintenance toolkit: VMs whose start failed'
    description: 'Each VM the toolkit started before a run whose start failed or was still running at the deadline, with the error and the run.'
    body: '''traces
| where tostring(customDimensions["maintenance.action"]) == "start"
    and tostring(customDimensions["maintenance.outcome"]) in ("failed", "timed-out")
| project timestamp, vm = tostring(customDimensions["maintenance.resource_id"]),
    outcome = tostring(customDimensions["maintenance.outcome"]), error = tostring(customDimensions["maintenance.reason"]),
    run = tostring(customDimensions["maintenance.correlation_id"])
| order by timestamp desc'''
  }
]

resource queries 'Microsoft.OperationalInsights/queryPacks/queries@2019-09-01' = [for query in savedQueries: {
  parent: queryPack
  name: guid(queryPack.id, query.key)
  properties: {
    displayName: query.displayName
    description: query.description
    body: query.body
    related: {
      categories: [
        'applications'
      ]
      resourceTypes: [
        'microsoft.insights/components'
      ]
    }
    tags: {
      labels: [
        'maintenance-toolkit'
      ]
    }
  }
}]

output applicationInsightsId string = appInsights.id
output applicationInsightsName string = appInsights.name
output logAnalyticsId string = workspace.id
