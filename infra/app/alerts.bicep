// The action group (an email receiver) and the log alerts on Application Insights:
// - a toolkit alert (handlers/ledger/alerts.py logs every one at ERROR starting "MAINTENANCE ALERT <kind>:"):
//   a run that could not be checked, a cancel not made, a late pre event, a pre event that never
//   came, VMs left running, a message in a poison queue. Split by the line's maintenance.alert
//   dimension: one alert per toolkit alert (per poison message, per run), not one per attempt;
// - a run was cancelled (handlers/phases/pre/cancel.py logs "run cancelled (HTTP ..., status ...)" when the
//   cancel request is accepted), one per run;
// - a function that nothing retries failed (the hold/approve link, the missed-pre-event watch, the
//   poison handlers). Failed attempts of the queue and Event Grid triggers are not alerted: they
//   are retried, and a message that fails on every attempt is a toolkit alert (poison-message);
//   an event that is never delivered is the topic's dead-letter alert.
// The Event Grid delivery alerts live with the system topic (event-grid-topic.bicep).

@description('Prefix of the alert rule names.')
param namePrefix string

@description('Region of the log alert rules (the Application Insights region).')
param location string

@description('Tags for the action group and the rules.')
param tags object

@description('Address the alerts are mailed to; empty for no action group (the alerts still fire in the portal).')
param alertEmail string

@description('Resource id of the Application Insights component the log alerts query.')
param applicationInsightsId string

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'maintenance'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actionGroupId = empty(alertEmail) ? '' : actionGroup.id

// Functions whose failed invocation no retry or poison queue turns into a toolkit alert.
var unretriedFunctions = '"maintenance_link", "missed_pre_events", "maintenance_work_poison", "maintenance_events_poison"'

var logAlerts = [
  {
    name: 'function-failures'
    displayName: 'Maintenance toolkit: a function that is not retried failed'
    description: 'The hold/approve link, the missed-pre-event watch or a poison handler failed. (A failed attempt of the Event Grid and queue triggers is retried; one that fails on every attempt raises the toolkit alert.)'
    severity: 2
    query: 'requests\n| where success == false\n| where operation_Name in (${unretriedFunctions})\n| extend alert = operation_Name\n| project timestamp, operation_Name, resultCode, cloud_RoleName, alert'
  }
  {
    name: 'run-cancelled'
    displayName: 'Maintenance toolkit: a maintenance run was cancelled'
    description: 'The pre event\'s verdict failed and the run was cancelled: no updates are installed in this window. The run ledger (MaintenanceRuns) has the reasons.'
    severity: 2
    query: 'traces\n| where message contains "run cancelled"\n| extend alert = tostring(customDimensions["maintenance.correlation_id"])\n| project timestamp, message, operation_Name, alert'
  }
  {
    name: 'toolkit-alert'
    displayName: 'Maintenance toolkit: something needs a person'
    description: 'A run could not be checked (and was cancelled, or reported only), a failed verdict could not cancel its run, a pre event came too late to act on or never came, VMs the toolkit started could not be turned off, or a message failed on every attempt. The message names the run and the machines; the run ledger has an alert-<kind> row.'
    severity: 1
    query: 'traces\n| where message has "MAINTENANCE ALERT"\n| extend alert = tostring(customDimensions["maintenance.alert"])\n| project timestamp, message, operation_Name, alert'
  }
]

resource logAlertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for alert in logAlerts: {
  name: '${namePrefix}-${alert.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: alert.displayName
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          // One alert per value of the query's `alert` column: per toolkit alert, per run, per function.
          dimensions: [
            {
              name: 'alert'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: empty(actionGroupId) ? [] : [
        actionGroupId
      ]
    }
  }
}]

output actionGroupId string = actionGroupId
