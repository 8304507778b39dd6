#!/bin/sh
# azd postdeploy hook (azure.yaml): the second pass. Event Grid refuses a subscription to a
# function that does not exist yet, so the subscriptions to pre_maintenance / post_maintenance are
# created here, after `azd deploy` has put the code in place: infra/subscriptions.bicep is deployed
# into the system topic's resource group with the values infra/main.bicep output (azd exports its
# environment to hooks). Safe to run again: the same two subscriptions are updated in place.
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
# the endpoint does not exist: wait and try again a few times.
while :; do
  echo "postdeploy: creating the event subscriptions on $SYSTEM_TOPIC_NAME (attempt $attempt of $attempts)"
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
    --output none; then
    echo "postdeploy: event subscriptions ready ($EVENT_DELIVERY_MODE delivery)"
    exit 0
  fi
  if [ "$attempt" -ge "$attempts" ]; then
    echo "postdeploy: could not create the event subscriptions after $attempts attempts" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep 30
done
