"""The vision/PLC handshake and its transports (Modbus TCP server/client, Siemens S7)."""

# The station schema imports our config; loading the config package first keeps that import
# order whichever module is imported first (otherwise plc.config -> config -> schema -> plc.config).
import inspectd.config  # noqa: F401
