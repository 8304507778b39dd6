#!/bin/sh
# azd postdeploy hook (azure.yaml): the second pass. Event Grid refuses a subscription to a
# function that does not exist yet, so the subscriptions to pre_maintenance / post_maintenance are
# created here, after `azd deploy` has put the code in place; and the custom roles that provision
# defined, which have replicated by now, are assigned here (a retry covers one that has not):
# infra/subscriptions.bicep is deployed into the system topic's resource group with the values
# infra/main.bicep output (azd exports its environment to hooks). Safe to run again: the same
# subscriptions and assignments are updated in place.
#
# Needs the Azure CLI signed in to the same tenant (`az login`); azd's own sign-in is separate.
set -eu

: "${SYSTEM_TOPIC_SUBSCRIPTION_ID:?is not set: run azd provision first}"
: "${SYSTEM_TOPIC_RESOURCE_GROUP:?is not set: run azd provision first}"
: "${SYSTEM_TOPIC_NAME:?is not set: run azd provision first}"
: "${FUNCTION_APP_ID:?is not set: run azd provision first}"
: "${STORAGE_ACCOUNT_ID:?is not set: run azd provision first}"
: "${DEAD_LETTER_CONTAINER_NAME:?is not set: run azd provision first}"
: "${EVENTS_QUEUE_NAME:?is not set: run azd provision first}"
: "${EVENT_DELIVERY_MODE:?is not set: run azd provision first}"
: "${PRE_EVENT_TTL_MINUTES:?is not set: run azd provision first}"
: "${POST_EVENT_TTL_MINUTES:?is not set: run azd provision first}"
: "${EVENT_MAX_DELIVERY_ATTEMPTS:?is not set: run azd provision first}"
: "${MANAGED_IDENTITY_PRINCIPAL_ID:?is not set: run azd provision first}"
: "${MAINTENANCE_CONFIGURATION_NAME:?is not set: run azd provision first}"
: "${ROLE_TARGET_SUBSCRIPTION_IDS:?is not set: run azd provision first}"
: "${ROLE_TARGET_RESOURCE_GROUP_IDS:?is not set: run azd provision first}"
: "${ROLE_SNAPSHOT_ACTIONS:?is not set: run azd provision first}"
: "${ROLE_GUEST_ACTIONS:?is not set: run azd provision first}"
: "${ROLE_EMAIL_RESOURCE_ID?is not set: run azd provision first}"

if ! command -v az >/dev/null 2>&1; then
  echo "postdeploy: the Azure CLI (az) is needed to create the Event Grid subscriptions" >&2
  exit 1
fi
if ! az account show --output none 2>/dev/null; then
  echo "postdeploy: the Azure CLI is not signed in: run az login, then azd hooks run postdeploy" >&2
  exit 1
fi

template="$(cd "$(dirname "$0")/.." && pwd)/subscriptions.bicep"
attempts=${POSTDEPLOY_ATTEMPTS:-5}
attempt=1
# Right after a deployment the functions may still be being indexed, and Event Grid answers that
# the endpoint does not exist; a role definition may still be replicating, and the assignment
# fails with RoleDefinitionDoesNotExist: wait and try again a few times.
while :; do
  echo "postdeploy: assigning the custom roles, creating the event subscriptions on $SYSTEM_TOPIC_NAME (attempt $attempt of $attempts)"
  if az deployment group create \
    --subscription "$SYSTEM_TOPIC_SUBSCRIPTION_ID" \
    --resource-group "$SYSTEM_TOPIC_RESOURCE_GROUP" \
    --name "mt-event-subscriptions" \
    --template-file "$template" \
    --parameters \
      systemTopicName="$SYSTEM_TOPIC_NAME" \
      functionAppId="$FUNCTION_APP_ID" \
      storageAccountId="$STORAGE_ACCOUNT_ID" \
      deadLetterContainerName="$DEAD_LETTER_CONTAINER_NAME" \
      eventsQueueName="$EVENTS_QUEUE_NAME" \
      deliveryMode="$EVENT_DELIVERY_MODE" \
      preEventTimeToLiveInMinutes="$PRE_EVENT_TTL_MINUTES" \
      postEventTimeToLiveInMinutes="$POST_EVENT_TTL_MINUTES" \
      maxDeliveryAttempts="$EVENT_MAX_DELIVERY_ATTEMPTS" \
      principalId="$MANAGED_IDENTITY_PRINCIPAL_ID" \
      maintenanceConfigurationName="$MAINTENANCE_CONFIGURATION_NAME" \
      targetSubscriptionIds="$ROLE_TARGET_SUBSCRIPTION_IDS" \
      targetResourceGroupIds="$ROLE_TARGET_RESOURCE_GROUP_IDS" \
      includeSnapshotActions="$ROLE_SNAPSHOT_ACTIONS" \
      enableGuestActions="$ROLE_GUEST_ACTIONS" \
      communicationServiceId="$ROLE_EMAIL_RESOURCE_ID" \
    --output none; then
    echo "postdeploy: custom roles assigned, event subscriptions ready ($EVENT_DELIVERY_MODE delivery)"
    exit 0
  fi
  if [ "$attempt" -ge "$attempts" ]; then
    echo "postdeploy: could not assign the roles and create the event subscriptions after $attempts attempts" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep 30
done
