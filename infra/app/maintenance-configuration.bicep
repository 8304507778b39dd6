// A new Update Manager schedule (maintenance configuration), used when main.bicep is not given an
// existing one. Machines are not assigned here: assign them (static or dynamic scope) in Update
// Manager, or with Microsoft.Maintenance/configurationAssignments, after deployment.

@description('Name of the maintenance configuration.')
param name string

@description('Region of the maintenance configuration.')
param location string

@description('Tags for the maintenance configuration.')
param tags object

@description('First window start, exactly "yyyy-MM-dd HH:mm" (e.g. 2026-05-03 22:00) in timeZone; no default, so that a redeployment never moves the schedule. Pre events need it at least 40 minutes after the schedule is created.')
@minLength(16)
@maxLength(16)
param startDateTime string

@description('Window length "HH:mm" (InGuestPatch: 01:30 to 03:55).')
param duration string

@description('Windows time zone id of startDateTime, e.g. UTC or W. Europe Standard Time.')
param timeZone string

@description('Recurrence, e.g. "1Week Sunday", "1Month Second Tuesday", "1Day".')
param recurEvery string

@description('Reboot after patching.')
@allowed([
  'IfRequired'
  'Never'
  'Always'
])
param rebootSetting string

@description('Linux update classifications to install.')
param linuxClassifications array

@description('Windows update classifications to install.')
param windowsClassifications array

resource configuration 'Microsoft.Maintenance/maintenanceConfigurations@2023-04-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    maintenanceScope: 'InGuestPatch'
    visibility: 'Custom'
    // Update Manager schedules require the user patch mode.
    extensionProperties: {
      InGuestPatchMode: 'User'
    }
    maintenanceWindow: {
      startDateTime: startDateTime
      duration: duration
      timeZone: timeZone
      recurEvery: recurEvery
    }
    installPatches: {
      rebootSetting: rebootSetting
      linuxParameters: {
        classificationsToInclude: linuxClassifications
      }
      windowsParameters: {
        classificationsToInclude: windowsClassifications
      }
    }
  }
}

output id string = configuration.id
output name string = configuration.name
