"""The event bus: subjects, the in-process bus, the NATS link and the BrokerBridge actor."""
