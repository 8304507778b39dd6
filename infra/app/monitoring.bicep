// Log Analytics workspace + workspace-based Application Insights, with local (instrumentation-key)
// authentication disabled: App Insights then accepts telemetry only from Entra ID principals that
// hold Monitoring Metrics Publisher on it. The app sends with its user-assigned identity
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING in function-app.bicep), so the connection string it
// is given only says where to send, and cannot be used on its own to write telemetry.

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Region of both resources.')
param location string

@description('Tags for both resources.')
param tags object

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

output applicationInsightsId string = appInsights.id
output applicationInsightsName string = appInsights.name
output logAnalyticsId string = workspace.id
