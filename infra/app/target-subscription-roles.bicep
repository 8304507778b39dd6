// The app identity's roles on one target subscription (the machines' subscription):
// - Reader: Resource Graph (machines of a run, power states, disks) and instance views; without it
//   Resource Graph answers with nothing rather than an error;
// - Virtual Machine Contributor: start, deallocate, power off;
// - Tag Contributor: stamp the run's time and patch status on each machine after a run (the Tags
//   API's merge: no write access to the VM itself);
// - Disk Snapshot Contributor: create and delete the toolkit's snapshots (left out when snapshots
//   are off).
targetScope = 'subscription'

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Also grant Disk Snapshot Contributor (MAINTENANCE_SNAPSHOT_DISKS is not none).')
param includeSnapshotRole bool

var roleIds = {
  reader: 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
  virtualMachineContributor: '9980e02c-c2be-4d73-94e8-173b1dc7cf3c'
  diskSnapshotContributor: '7efff54f-a5b4-42b5-a1c5-5411624893ce'
  tagContributor: '4a9ae827-6dc8-4573-8ac7-8239d42aa03f'
}

var assignedRoleIds = includeSnapshotRole ? [
  roleIds.reader
  roleIds.virtualMachineContributor
  roleIds.tagContributor
  roleIds.diskSnapshotContributor
] : [
  roleIds.reader
  roleIds.virtualMachineContributor
  roleIds.tagContributor
]

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in assignedRoleIds: {
  name: guid(subscription().id, principalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId))
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]
