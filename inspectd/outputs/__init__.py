"""Plant-side outputs beyond the PLC: MQTT (store-and-forward from the journal) and an OPC UA server."""
