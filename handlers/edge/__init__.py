"""What the functions call: event intake, the queue worker, the poison queues, the Scheduled
Events recorder. The top layer: it may use every other, and none uses it."""
