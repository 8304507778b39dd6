// The action group (an email receiver) and the log alerts on Application Insights:
// - a function invocation failed (any of the four functions: the Functions host records every
//   invocation as a request, whatever its trigger);
// - a run was cancelled (handlers/phases/pre/cancel.py logs "run cancelled (HTTP ..., status ...)" when the
//   cancel request is accepted);
// - a toolkit alert (handlers/ledger/alerts.py logs every one at ERROR starting "MAINTENANCE ALERT <kind>:"):
//   a run that could not be checked, a cancel not made, a late pre event, VMs left running, a
//   message in a poison queue.
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

var logAlerts = [
  {
    name: 'function-failures'
    displayName: 'Maintenance toolkit: a function invocation failed'
    description: 'A pre_maintenance, post_maintenance, maintenance_worker or maintenance_events_queue invocation failed. Failed worker messages are retried and end in the -poison queue.'
    severity: 2
    query: 'requests\n| where success == false\n| project timestamp, operation_Name, resultCode, cloud_RoleName'
  }
  {
    name: 'run-cancelled'
    displayName: 'Maintenance toolkit: a maintenance run was cancelled'
    description: 'The pre event\'s verdict failed and the run was cancelled: no updates are installed in this window. The run ledger (MaintenanceRuns) has the reasons.'
    severity: 2
    query: 'traces\n| where message contains "run cancelled"\n| project timestamp, message, operation_Name'
  }
  {
    name: 'toolkit-alert'
    displayName: 'Maintenance toolkit: something needs a person'
    description: 'A run could not be checked (and was cancelled, or reported only), a failed verdict could not cancel its run, a pre event came too late to act on, VMs the toolkit started could not be turned off, or a message failed on every attempt. The message names the run and the machines; the run ledger has an alert-<kind> row.'
    severity: 1
    query: 'traces\n| where message has "MAINTENANCE ALERT"\n| project timestamp, message, operation_Name'
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
