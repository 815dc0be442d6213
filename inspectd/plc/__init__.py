"""The vision/PLC handshake and its transports (Modbus TCP server/client, Siemens S7)."""
