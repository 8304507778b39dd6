// Every custom role of the toolkit, defined and (on the second pass) assigned to the app identity:
// - Maintenance run canceller, on the maintenance configuration (this resource group);
// - Maintenance machine operator, on each target subscription and resource group (with Reader,
//   the built-in read-only role, which is assigned on the first pass already);
// - Maintenance guest actions, on each target subscription, when enableGuestActions is true;
// - Maintenance e-mail sender, on the toolkit's Communication Services resource, when there is one.
//
// Why two passes (infra/README.md, "Custom roles and replication"): a new role definition takes a
// while to replicate, and an assignment that reaches a region before its definition fails with
// RoleDefinitionDoesNotExist. The first pass (assign false) writes the definitions; the second
// (main.bicep with deployEventSubscriptions=true, or subscriptions.bicep from the azd postdeploy
// hook, which retries) writes them again unchanged and assigns them. No run can need them
// earlier: the second pass is also the one that creates the event subscriptions.
// Deployed into the maintenance configuration's resource group.

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Assign the roles (the second pass). false: write their definitions only.')
param assign bool

@description('Name of the maintenance configuration (in this resource group).')
param maintenanceConfigurationName string

@description('Subscription ids whose machines the app manages.')
param targetSubscriptionIds array

@description('Resource group ids (/subscriptions/<id>/resourceGroups/<name>) whose machines the app manages.')
param targetResourceGroupIds array

@description('Grant creating and deleting snapshots (MAINTENANCE_SNAPSHOT_DISKS is not none).')
param includeSnapshotActions bool

@description('Define and assign the guest-actions role (MAINTENANCE_GUEST_ACTIONS).')
param enableGuestActions bool

@description('Resource id of the toolkit\'s Communication Services resource; empty: no e-mail role.')
param communicationServiceId string = ''

module cancelRole 'maintenance-cancel-role.bicep' = {
  name: take('mt-cancel-role-${uniqueString(principalId)}', 64)
  params: {
    maintenanceConfigurationName: maintenanceConfigurationName
    principalId: principalId
    assign: assign
  }
}

module subscriptionRoles 'target-subscription-roles.bicep' = [for (subscriptionId, i) in targetSubscriptionIds: {
  name: take('mt-roles-${uniqueString(principalId)}-sub-${i}', 64)
  scope: subscription(subscriptionId)
  params: {
    principalId: principalId
    includeSnapshotActions: includeSnapshotActions
    assign: assign
  }
}]

module resourceGroupRoles 'target-resource-group-roles.bicep' = [for (resourceGroupId, i) in targetResourceGroupIds: {
  name: take('mt-roles-${uniqueString(principalId)}-rg-${i}', 64)
  scope: resourceGroup(split(resourceGroupId, '/')[2], split(resourceGroupId, '/')[4])
  params: {
    principalId: principalId
    includeSnapshotActions: includeSnapshotActions
    assign: assign
  }
}]

// Target resource groups get no guest-actions role: guest actions need the machine's subscription
// in targetSubscriptionIds.
module guestActionsRoles 'guest-actions-role.bicep' = [for (subscriptionId, i) in targetSubscriptionIds: if (enableGuestActions) {
  name: take('mt-guest-role-${uniqueString(principalId)}-sub-${i}', 64)
  scope: subscription(subscriptionId)
  params: {
    principalId: principalId
    assign: assign
  }
}]

// (Split into parts that exist even without e-mail: a skipped module's scope is still evaluated.)
var emailParts = split(empty(communicationServiceId) ? '${resourceGroup().id}/providers/Microsoft.Communication/communicationServices/none' : communicationServiceId, '/')

module emailSenderRole 'email-sender-role.bicep' = if (!empty(communicationServiceId)) {
  name: take('mt-email-role-${uniqueString(principalId)}', 64)
  scope: resourceGroup(emailParts[2], emailParts[4])
  params: {
    communicationServiceName: emailParts[8]
    senderPrincipalId: principalId
    assign: assign
  }
}
