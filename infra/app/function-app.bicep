// The Function App on the Flex Consumption plan (Linux, Python 3.12; the code supports 3.11 too), running as the user-assigned
// identity for everything: host storage, the deployment package, Application Insights and Azure.
// No storage keys: the host reaches its storage through AzureWebJobsStorage__* identity settings.
// Flex Consumption takes the runtime from functionAppConfig and rejects FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION and WEBSITE_RUN_FROM_PACKAGE, so none of those are set.

@description('Name of the Function App (globally unique host name).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags for the plan and the app (azd-service-name is added to the app).')
param tags object

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Name of the storage account (in this resource group) for host storage and deployment.')
param storageAccountName string

@description('Blob container the platform deploys the app package from.')
param deploymentContainerName string

@description('Name of the Application Insights component (in this resource group).')
param applicationInsightsName string

@description('Upper bound of Flex Consumption instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('The toolkit\'s own settings (MAINTENANCE_*, AZURE_RESOURCE_MANAGER_ENDPOINT), merged over the host settings.')
param appSettings object

@description('Resource id of a subnet delegated to Microsoft.App/environments for Flex Consumption VNet integration (the app\'s outbound traffic then goes through that VNet, to private endpoints among others). Empty: no VNet integration.')
param virtualNetworkSubnetId string

@description('Some app settings are Key Vault references: resolve them with the user-assigned identity (App Service would use a system-assigned one, which this app does not have).')
param resolveKeyVaultReferences bool = false

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var endpoints = storage.properties.primaryEndpoints

// Identity-based host storage. The explicit service URIs win over accountName in the Functions
// host (and in the app's own settings), so sovereign clouds and custom domains work too;
// accountName stays for tools that only look for it.
var hostSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: substring(endpoints.blob, 0, length(endpoints.blob) - 1)
  AzureWebJobsStorage__queueServiceUri: substring(endpoints.queue, 0, length(endpoints.queue) - 1)
  AzureWebJobsStorage__tableServiceUri: substring(endpoints.table, 0, length(endpoints.table) - 1)
  AZURE_CLIENT_ID: identityClientId
  // The connection string names the ingestion endpoint; its instrumentation key alone can no longer
  // write (local auth is disabled in monitoring.bicep). The authentication string makes the SDK
  // send with the identity's Entra ID token instead.
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // host.json's telemetryMode is OpenTelemetry: the Python worker then configures the Azure
  // Monitor OpenTelemetry distro itself and streams the app's logs and spans, with their
  // attributes, to Application Insights, and the host does not forward them a second time.
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: resolveKeyVaultReferences ? identityId : null
    // A site property on Flex Consumption too (Microsoft's Flex samples set it here, not in functionAppConfig).
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${endpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.12'
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(hostSettings, appSettings)
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName

// No FTP or SCM (Kudu) basic-auth publishing: azd and the Flex deployment container use Entra ID.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}
