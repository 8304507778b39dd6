// Deployed only when main.bicep's storagePublicNetworkAccess is Disabled. The app then reaches its
// storage only through VNet integration, so the subnet must be given: Resource Manager refuses an
// empty value for this parameter (minLength), and the deployment stops before the storage account
// is closed (main.bicep's storage module waits for this one). No resources.

@minLength(1)
@description('main.bicep\'s functionAppSubnetId, required with storagePublicNetworkAccess Disabled: a subnet delegated to Microsoft.App/environments, in a VNet with private endpoints for the account\'s blob, queue and table.')
param functionAppSubnetId string

output functionAppSubnetId string = functionAppSubnetId
